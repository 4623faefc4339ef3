"""The CLI contract: exit codes, one-line errors, --json documents."""
from __future__ import annotations

import json
import subprocess
import sys

SLMPACK = [sys.executable, "-m", "slmpack.cli"]


def run(*args):
    return subprocess.run([*SLMPACK, *args], capture_output=True, text=True, timeout=600)


def test_help_explains_targets_and_exit_codes():
    r = run("export", "--help")
    assert r.returncode == 0
    assert "--target" in r.stdout and "exit codes" in r.stdout and "--max-context" in r.stdout


def test_bad_input_exit_code_2_with_json(tmp_path):
    r = run("export", str(tmp_path / "missing"), "--out", str(tmp_path / "o"), "--json")
    assert r.returncode == 2
    assert json.loads(r.stdout)["error"] == "E_MODEL_DIR_MISSING"
    assert r.stderr.strip().count("\n") == 0 and r.stderr.startswith("error[E_MODEL_DIR_MISSING]")
    assert not (tmp_path / "o").exists()


def test_inspect_json_defaults_to_demo_model():
    r = run("inspect", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["family"] == "llama" and info["num_kv_heads"] < info["num_heads"]
    assert info["weights_mb"]["int4"] < info["weights_mb"]["int8"] < info["weights_mb"]["fp32"]


def test_verify_exit_code_1_on_tampering(tmp_path, demo_onnx_package):
    import shutil

    pkg = tmp_path / "p"
    shutil.copytree(demo_onnx_package.path, pkg)
    (pkg / "model.onnx").write_bytes(b"tampered")
    r = run("verify", str(pkg), "--json")
    assert r.returncode == 1
    assert json.loads(r.stdout)["details"]["changed"] == ["model.onnx"]
