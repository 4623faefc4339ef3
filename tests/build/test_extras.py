"""Per-target extras: ONNX exports with every other toolchain absent; a missing target names its pip
extra; a fresh venv with only `slmpack[onnx]` exports and validates the demo (slow)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.tiny_models import write_tiny_model

REPO = Path(__file__).resolve().parents[2]
OTHER_TOOLCHAINS = ("executorch", "torchao", "coremltools", "litert_torch", "ai_edge_litert", "litert_lm",
                    "litert_lm_builder", "ai_edge_quantizer", "litert_converter", "jax", "jaxlib", "tensorflow",
                    "transformers")
BLOCKED_RUN = """
import importlib.machinery as m, sys
BLOCK = set(sys.argv[1].split(","))
class Absent(m.PathFinder):  # these packages look uninstalled: find_spec None, import fails
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        return None if name.split(".")[0] in BLOCK else m.PathFinder.find_spec(name, path, target)
sys.meta_path[sys.meta_path.index(m.PathFinder)] = Absent
from slmpack.cli import main
rc = main(sys.argv[2:])
leaked = sorted(n for n in sys.modules if n.split(".")[0] in BLOCK)
print("LEAKED " + ",".join(leaked), file=sys.stderr)
sys.exit(rc)
"""


def _blocked(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKED_RUN, ",".join(OTHER_TOOLCHAINS), *args],
                          capture_output=True, text=True, timeout=600)


def test_onnx_exports_without_the_other_toolchains(tmp_path):
    model = write_tiny_model(tmp_path / "m", "llama", hidden=16, heads=2, vocab=64, max_pos=64)
    p = _blocked("export", str(model), "--target", "onnx", "--out", str(tmp_path / "pkg"), "--max-context", "64", "--max-prompt", "32",
                 "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["packages"][0]["validation"]["passed"] is True
    assert "LEAKED \n" in p.stderr + "\n"

    p = _blocked("export", str(model), "--target", "tflite", "--out", str(tmp_path / "t"))
    assert p.returncode == 2
    assert "error[E_TARGET_NOT_INSTALLED]: pip install 'slmpack[tflite]'" in p.stderr
    assert not (tmp_path / "t").exists()


def test_target_all_skips_uninstalled_with_a_note(tmp_path):
    p = _blocked("inspect", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["supported_targets"] == ["onnx"]


@pytest.mark.slow
def test_fresh_venv_with_only_the_onnx_extra(tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    pip = [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    for args in (["setuptools==84.2.1", "wheel==0.48.0"], ["-c", str(REPO / "constraints.txt"), f"{REPO}[onnx]"]):
        r = subprocess.run(pip + args, capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    slm = str(env_dir / "bin" / "slmpack")
    r = subprocess.run([slm, "export", "--target", "onnx", "--out", str(tmp_path / "pkg"), "--json"],
                       capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["packages"][0]["validation"]["passed"] is True
    parity = json.loads((tmp_path / "pkg" / "manifest.json").read_text())["validation"]["tokenizer_parity"]
    assert parity["not_checked"] == {"onnxruntime-genai": "not installed here: pip install onnxruntime-genai==0.18.0"}
    r = subprocess.run([slm, "validate", str(tmp_path / "pkg")], capture_output=True, text=True, timeout=300,
                       env=env, cwd=tmp_path)
    assert r.returncode == 0 and "PASSED" in r.stdout, r.stderr
    r = subprocess.run([slm, "export", "--target", "tflite", "--out", str(tmp_path / "t")], capture_output=True,
                       text=True, timeout=300, env=env, cwd=tmp_path)
    assert r.returncode == 2
    assert "error[E_TARGET_NOT_INSTALLED]: pip install 'slmpack[tflite]'" in r.stderr
    installed = subprocess.run([str(py), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True,
                               env=env).stdout.lower()
    for absent in ("executorch", "coremltools", "litert-torch", "ai-edge-litert", "jax"):
        assert f"\n{absent}==" not in "\n" + installed
