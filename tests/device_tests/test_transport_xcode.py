"""The xcode transport: project generation here; running needs macOS (typed error on Linux)."""
import json
import platform
import subprocess

import pytest

from slmpack.device_tests.transports import XcodeTransport, generate_project
from slmpack.errors import BadInputError, UnsupportedError


def test_generate_project(tiny_package, tmp_path):
    out = generate_project(tiny_package, tmp_path / "proj")
    names = sorted(p.name for p in out.iterdir())
    assert names == ["README.md", "device_runner.py", "requirements.txt", "run_validation.sh", "slmpack_runtime",
                     tiny_package.name]
    script = (out / "run_validation.sh").read_text()
    assert "device_runner.py tiny-onnx --out result.json" in script and "Darwin" in script
    assert subprocess.run(["bash", "-n", str(out / "run_validation.sh")]).returncode == 0
    assert (out / "run_validation.sh").stat().st_mode & 0o111
    assert "coremltools==" in (out / "requirements.txt").read_text()
    runner = (out / "slmpack_runtime" / "adapters" / "coreml.py").read_text()   # the shipped kit's adapter
    assert "ct.models.MLModel(" in runner and ".predict(" in runner
    assert "slmpack_runtime" in (out / "device_runner.py").read_text()
    manifest = json.loads((out / tiny_package.name / "manifest.json").read_text())
    assert manifest["artifact"] in (out / "README.md").read_text()
    with pytest.raises(BadInputError):
        generate_project(tmp_path / "proj", tmp_path / "proj2")  # not a package


@pytest.mark.skipif(platform.system() == "Darwin", reason="checks the Linux refusal")
def test_run_requires_macos(tiny_package, tmp_path):
    tr = XcodeTransport(tmp_path / "staged")
    tr.push(tiny_package, "pkg")
    assert (tmp_path / "staged" / "run_validation.sh").exists()
    proc = subprocess.run(["bash", str(tmp_path / "staged" / "run_validation.sh")], capture_output=True, text=True)
    assert proc.returncode == 2 and "E_REQUIRES_MACOS" in proc.stderr
    with pytest.raises(UnsupportedError) as err:
        tr.run([*tr.python_argv(), "device_runner.py", "pkg"], timeout=10)
    assert err.value.code == "E_REQUIRES_MACOS" and str(tmp_path / "staged") in str(err.value)
    tr.cleanup()
    assert (tmp_path / "staged").exists()  # a project dir the caller chose is kept
