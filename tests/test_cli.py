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


def test_devices_lists_profiles_as_json():
    r = run("devices", "--json")
    assert r.returncode == 0, r.stderr
    names = {d["name"] for d in json.loads(r.stdout)}
    assert {"rpi5", "rpi4", "pixel8", "galaxy-s24", "iphone15pro", "generic-arm64", "host", "rpi5-emulated"} <= names


def test_fit_refuses_too_big_model_for_rpi4_with_numbers(tmp_path):
    cfg = {"architectures": ["LlamaForCausalLM"], "vocab_size": 32000, "hidden_size": 2048,
           "intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32,
           "num_key_value_heads": 4, "max_position_embeddings": 2048, "tie_word_embeddings": False}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    r = run("fit", str(tmp_path), "--device", "rpi4", "--bits", "32", "--json")
    assert r.returncode == 2
    assert r.stderr.startswith("error[E_FIT_TOO_BIG]")
    assert "MB" in r.stderr and "rpi4" in r.stderr
    assert run("fit", str(tmp_path), "--device", "rpi4", "--bits", "4").returncode == 0


def test_export_refuses_up_front_when_device_too_small(tmp_path):
    cfg = {"architectures": ["LlamaForCausalLM"], "vocab_size": 32000, "hidden_size": 2048,
           "intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32,
           "num_key_value_heads": 4, "max_position_embeddings": 2048, "tie_word_embeddings": False}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    r = run("export", str(tmp_path), "--device", "rpi4", "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "E_FIT_TOO_BIG" in r.stderr
    assert not (tmp_path / "o").exists()
