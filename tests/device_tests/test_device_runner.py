"""The standalone on-device runner, run on the host with the host's onnxruntime."""
import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from slmpack.device_tests import device_runner

RUNNER = Path(device_runner.__file__)
# Runs the runner with torch, safetensors and slmpack made unimportable.
BLOCKED = """
import sys, runpy
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "safetensors", "slmpack", "transformers"):
            raise ImportError(f"device runner must not import {name}")
sys.meta_path.insert(0, Block())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run_runner(pkg, *args):
    proc = subprocess.run([sys.executable, "-c", BLOCKED, str(RUNNER), str(pkg), *args],
                          capture_output=True, text=True, timeout=300)
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout + proc.stderr  # exactly one JSON document on stdout
    return proc.returncode, json.loads(lines[0])


def test_runner_imports_only_stdlib_and_the_kit():
    """The script itself imports only the standard library; everything else is the kit's."""
    allowed = {"importlib", "sys", "pathlib", "__future__"}
    for node in ast.walk(ast.parse(RUNNER.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module]
        else:
            continue
        assert {n.split(".")[0] for n in names} <= allowed, names


def test_safetensors_parser_matches_the_library(tiny_package, tmp_path):
    from safetensors.numpy import load_file
    from safetensors.torch import save_file
    import torch

    from slmpack.errors import BadInputError
    from slmpack.runtime import safetensors as kit_st

    ours, ref = kit_st.load(tiny_package / "test_vectors.safetensors"), \
        load_file(str(tiny_package / "test_vectors.safetensors"))
    assert sorted(ours) == sorted(ref)
    for k in ref:
        assert ours[k].dtype == ref[k].dtype and np.array_equal(ours[k], ref[k])
    t = {"b": torch.tensor([[1.5, -2.0], [3.25, 0.0]], dtype=torch.bfloat16), "s": torch.tensor(7, dtype=torch.int32)}
    save_file(t, str(tmp_path / "x.safetensors"))
    got = kit_st.load(tmp_path / "x.safetensors")
    assert np.array_equal(got["b"], t["b"].float().numpy()) and got["s"].shape == () and got["s"] == 7
    (tmp_path / "bad.safetensors").write_bytes(b"\xff" * 8 + b"{}")
    with pytest.raises(BadInputError):
        kit_st.load(tmp_path / "bad.safetensors")


def test_runner_validates_the_package(tiny_package):
    rc, doc = run_runner(tiny_package, "--threads", "1")
    assert rc == 0 and doc["ok"], doc
    assert doc["hashes_ok"] and doc["bad_files"] == []
    assert doc["greedy_match"] and len(doc["greedy_ids"]) == 32
    assert doc["prefill_max_abs_diff"] < 1e-4 and doc["decode_max_abs_diff"] < 1e-4
    assert doc["prefill_top1_agreement"] == 1.0
    assert doc["runtime"]["name"] == "onnxruntime" and doc["runtime"]["version_ok"]
    for key in ("ttft_ms", "prefill_tok_s", "decode_tok_s", "peak_rss_mb"):
        assert doc[key] > 0, key
    assert doc["machine"]["machine"]


def test_runner_refuses_a_tampered_package(package_copy):
    (package_copy / "genai_config.json").write_text("{}")
    (package_copy / "extra.bin").write_bytes(b"x")
    rc, doc = run_runner(package_copy)
    assert rc == 1 and not doc["ok"] and doc["hashes_ok"] is False
    assert {"path": "genai_config.json", "reason": "sha256 mismatch"} in doc["bad_files"]
    assert {"path": "extra.bin", "reason": "not in manifest"} in doc["bad_files"]
    assert doc["prefill_max_abs_diff"] is None  # the model was not run
    assert doc["error"]["code"] == "E_PACKAGE_INTEGRITY"


def test_runner_reports_bad_input_as_json(tmp_path):
    rc, doc = run_runner(tmp_path / "nope")
    assert rc == 2 and doc["error"]["code"] == "E_PACKAGE_MISSING"  # a typed bad-input code, exit 2


def test_runner_detects_wrong_reference(package_copy):
    from safetensors.numpy import load_file, save_file
    import hashlib

    tv = load_file(str(package_copy / "test_vectors.safetensors"))
    tv["greedy_ids"] = tv["greedy_ids"].copy()
    tv["greedy_ids"][5] += 1
    save_file(tv, str(package_copy / "test_vectors.safetensors"))
    manifest = json.loads((package_copy / "manifest.json").read_text())
    manifest["files"]["test_vectors.safetensors"] = hashlib.sha256(
        (package_copy / "test_vectors.safetensors").read_bytes()).hexdigest()
    (package_copy / "manifest.json").write_text(json.dumps(manifest))
    rc, doc = run_runner(package_copy)
    assert rc == 1 and doc["hashes_ok"] and not doc["greedy_match"] and doc["error"]["code"] == "E_VALIDATION"


def _retargeted(src, tmp_path, target):
    """A copy of an encoder package that claims another target (manifest re-hashed)."""
    import shutil

    from slmpack.package import MANIFEST, hash_tree, write_json

    d = tmp_path / f"as-{target}"
    shutil.copytree(src, d)
    m = json.loads((d / MANIFEST).read_text())
    write_json(d / MANIFEST, {**m, "target": target, "files": hash_tree(d)})
    return d


def test_runner_validates_an_encoder_package_without_torch(encoder_package):
    pkg = encoder_package("tiny_bert_cls", "tflite").path
    rc, doc = run_runner(pkg, "--threads", "1")  # torch, safetensors, transformers, slmpack unimportable
    assert rc == 0 and doc["ok"], doc
    assert doc["kind"] == "encoder" and doc["output"] == "logits" and doc["hashes_ok"]
    assert doc["runtime"]["name"] == "ai_edge_litert" and doc["runtime"]["version_ok"]
    v = doc["vectors"]
    assert v["rows"] == 8 and v["passed"] and v["label_agreement"] == 1.0 and v["max_abs_diff"] < 1e-4
    assert np.asarray(doc["outputs"]).shape == (8, 3) and doc["peak_rss_mb"] > 0


@pytest.mark.parametrize("target", ["executorch", "coreml"])
def test_encoder_targets_without_a_device_runtime_are_refused(encoder_package, tmp_path, target):
    """Typed refusal, on the device and before the harness pushes anything."""
    from slmpack.device_tests import run_device_test

    pkg = _retargeted(encoder_package("tiny_bert_cls", "onnx").path, tmp_path, target)
    rc, doc = run_runner(pkg)
    assert rc == 2 and doc["error"]["code"] == "E_DEVICE_RUNTIME_UNAVAILABLE", doc
    assert f"target {target}" in doc["error"]["message"]
    assert ("torch" if target == "executorch" else "Apple") in doc["error"]["message"]
    (r,) = run_device_test([pkg], ["host"]).results
    assert r.status == "skipped" and r.reason.startswith("E_DEVICE_RUNTIME_UNAVAILABLE: ")
    assert r.device_json is None and r.kind == "encoder"
