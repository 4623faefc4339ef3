"""Issue 17, defects 4 and 5: manifest fields are never trusted and symlinks inside a package are
refused, by ``verify``, ``validate``, the device runner and ``device-test``. Each case edits a
real package the way an attacker would (change a field, re-hash what the manifest lists)."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from slmpack.device_tests import device_runner
from tests.device_tests.test_device_runner import BLOCKED  # the runner with torch/slmpack unimportable

RUNNER = Path(device_runner.__file__)


def device(pkg) -> tuple[int, dict]:
    proc = subprocess.run([sys.executable, "-c", BLOCKED, str(RUNNER), str(pkg)], capture_output=True, text=True,
                          timeout=300)
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout + proc.stderr
    return proc.returncode, json.loads(lines[0])


def cli(*args) -> tuple[int, dict]:
    proc = subprocess.run([sys.executable, "-m", "slmpack.cli", *args, "--json"], capture_output=True, text=True,
                          timeout=600)
    return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else {"stderr": proc.stderr}


def edit_manifest(pkg: Path, fn) -> None:
    m = json.loads((pkg / "manifest.json").read_text())
    fn(m)
    (pkg / "manifest.json").write_text(json.dumps(m))


def rehash(pkg: Path, *names: str) -> None:
    edit_manifest(pkg, lambda m: m["files"].update(
        {n: hashlib.sha256((pkg / n).read_bytes()).hexdigest() for n in names}))


def error_code(doc: dict) -> str:
    err = doc.get("error")
    return err["code"] if isinstance(err, dict) else err


def test_artifact_outside_the_package_is_refused(pkg_copy, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "model.tflite").write_bytes((pkg_copy / "model.tflite").read_bytes())
    edit_manifest(pkg_copy, lambda m: m.update(artifact="../other/model.tflite"))
    for command in ("verify", "validate"):
        rc, doc = cli(command, str(pkg_copy))
        assert rc == 2 and error_code(doc) == "E_MANIFEST_INVALID", (command, doc)
    rc, doc = device(pkg_copy)
    assert rc == 2 and doc["error"]["code"] == "E_MANIFEST_INVALID" and "artifact" in doc["error"]["message"]


def test_test_vectors_file_etc_passwd_is_refused(pkg_copy):
    edit_manifest(pkg_copy, lambda m: m["test_vectors"].update(file="/etc/passwd"))
    rc, doc = device(pkg_copy)
    assert rc == 2 and doc["error"]["code"] == "E_MANIFEST_INVALID" and "test_vectors.file" in doc["error"]["message"]
    rc, doc = cli("validate", str(pkg_copy))
    assert rc == 2 and error_code(doc) == "E_MANIFEST_INVALID"


def test_missing_target_is_an_error_not_skipped(pkg_copy, tmp_path):
    edit_manifest(pkg_copy, lambda m: m.pop("target"))
    rc, doc = device(pkg_copy)
    assert rc == 2 and doc["error"]["code"] == "E_MANIFEST_INVALID"
    rc, doc = cli("device-test", str(pkg_copy), "--device", "host", "--report", str(tmp_path / "report"))
    assert rc == 2 and error_code(doc) == "E_MANIFEST_INVALID", doc


def _halve_reference(pkg: Path) -> None:
    """The attack's numeric half: test vectors that no longer describe the artifact (as a halved
    weight matrix would make them), re-hashed."""
    from safetensors.numpy import load_file, save_file

    tv = load_file(str(pkg / "test_vectors.safetensors"))
    tv["prefill_logits"] = tv["prefill_logits"] * 0.5
    tv["decode_logits"] = tv["decode_logits"] * 0.5
    save_file(tv, str(pkg / "test_vectors.safetensors"))
    rehash(pkg, "test_vectors.safetensors")


def test_rehashed_manifest_with_huge_tolerance_does_not_pass_on_device(pkg_copy):
    _halve_reference(pkg_copy)
    rc, doc = device(pkg_copy)               # the declared tolerance catches the change
    assert rc == 1 and doc["prefill_within_tolerance"] is False and doc["error"]["code"] == "E_VALIDATION"
    edit_manifest(pkg_copy, lambda m: m["tolerance"].update(atol=1e9, rtol=1e9))
    rc, doc = device(pkg_copy)               # and a manifest cannot loosen it
    assert rc == 2 and not doc["ok"] and doc["error"]["code"] == "E_MANIFEST_INVALID"
    assert "tolerance" in doc["error"]["message"]


def test_declared_tolerance_is_the_kit_rule(kit_package):
    """The rule table the device uses agrees with the target's own declaration for this package."""
    from slmpack.runtime import tolerance
    from slmpack.runtime.integrity import read_manifest

    m = read_manifest(kit_package)
    tol = tolerance.checked(m)
    assert (tol.atol, tol.rtol) == (m.tolerance.atol, m.tolerance.rtol) == (1e-4, 1e-4)


def _symlink_listed_file(pkg: Path, tmp_path: Path) -> Path:
    """Replace a listed file by a link to an identical copy outside the package: same bytes,
    same hash, so only the link itself is wrong."""
    outside = tmp_path / "outside-generation_config.json"
    outside.write_bytes((pkg / "generation_config.json").read_bytes())
    (pkg / "generation_config.json").unlink()
    os.symlink(outside, pkg / "generation_config.json")
    return outside


def test_symlink_inside_package_refused_by_verify_validate_and_device_runner(pkg_copy, tmp_path):
    _symlink_listed_file(pkg_copy, tmp_path)
    for command in ("verify", "validate"):
        rc, doc = cli(command, str(pkg_copy))
        assert rc == 1 and error_code(doc) == "E_PACKAGE_INTEGRITY", (command, doc)
    rc, doc = device(pkg_copy)
    assert rc == 1 and doc["hashes_ok"] is False and doc["prefill_max_abs_diff"] is None
    assert {"path": "generation_config.json", "reason": "symlink"} in doc["bad_files"]


def test_symlinked_directory_refused_and_never_copied_by_device_test(pkg_copy, tmp_path):
    from slmpack.device_tests import run_device_test
    from slmpack.device_tests.transports.local import LocalTransport
    from slmpack.errors import PackageIntegrityError

    secret = tmp_path / "secret-dir"
    secret.mkdir()
    (secret / "private.txt").write_text("not for the device")
    os.symlink(secret, pkg_copy / "extra")
    transport = LocalTransport()
    with pytest.raises(PackageIntegrityError) as err:
        run_device_test([pkg_copy], ["host"], transport=transport)
    assert "extra: symlink" in str(err.value)
    copied = list(Path(transport.workdir).rglob("private.txt")) if transport._workdir else []
    transport.cleanup()
    assert copied == []
    rc, doc = cli("device-test", str(pkg_copy), "--device", "host", "--report", str(tmp_path / "report"))
    assert rc == 1 and error_code(doc) == "E_PACKAGE_INTEGRITY"


def test_transport_copy_never_follows_a_link(tmp_path):
    from slmpack.device_tests.transports.local import copy_path
    from slmpack.errors import SlmpackError

    src = tmp_path / "src"
    src.mkdir()
    (src / "ok.txt").write_text("x")
    os.symlink("/etc/hostname", src / "leak")
    with pytest.raises(SlmpackError):
        copy_path(src, tmp_path / "dst")
    assert not (tmp_path / "dst").exists()
