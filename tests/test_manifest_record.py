"""The typed manifest: canonical JSON round trip, typed refusal naming the field, no path out of the package."""
from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest

from slmpack.errors import BadInputError, ErrorCode
from slmpack.runtime.manifest import Manifest, VectorsReference, check_relpath
from slmpack.runtime.records import LadderResult, PassResult, Readback, TargetName, Tolerance

SHA = "ab" * 32


def _manifest() -> dict:
    return {
        "schema_version": 1, "target": "tflite", "artifact": "model.tflite", "precision": "int8",
        "source": {"checkpoint_sha256": SHA, "architecture": "Qwen2ForCausalLM", "model_dir_name": "m"},
        "model": {"vocab_size": 64, "hidden_size": 32, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2,
                  "head_dim": 8, "max_context": 32, "max_prompt": 16, "num_parameters": 1000,
                  "eos_token_ids": [2], "family": "qwen2", "attention_bias": True},
        "io": {"signatures": {"decode": {"inputs": [], "outputs": []}}, "prefill_lengths": [8, 16]},
        "kv_cache": {"layout": "io_static", "dtype": "float32", "shape": ["batch", 2, 32, 8], "max_context": 32},
        "runtime": {"name": "ai-edge-litert", "min_version": "2.3.0",
                    "litert_lm": {"file": "model.litertlm", "bytes": 10}},
        "tolerance": {"atol": 1e-4, "rtol": 0.0, "min_top1": 0.99, "greedy_exact": False},
        "toolchain": {"torch": "2.9.0"},
        "tokenizer": {"files": ["tokenizer.json"]},
        "test_vectors": {"file": "test_vectors.safetensors", "prompt": "Return the", "reference": "fake_quant",
                         "eval_text": None},
        "quantization": {"plan": "quant_plan.json", "plan_sha256": SHA,
                         "recipe_file": "quant_recipe.json", "recipe": "int8", "readback_passed": True,
                         "summary": {"tensors": 3}},
        "report": {"precision": "int8", "attention_blocks_fused": "2/2", "op_types": ["ADD"],
                   "fusion_passes": {"fuse_sdpa": {"applied": 2, "declined": [{"where": "layer 1", "reason": "x"}]}},
                   "readback": {"passed": True, "problems": [], "bit_identical": True,
                                "max_abs_dequant_deviation": 0.0, "tensors": {}}},
        "files": {n: SHA for n in ("model.tflite", "model.litertlm", "tokenizer.json", "test_vectors.safetensors",
                                   "quant_recipe.json")},
        "validation": {"passed": True, "mode": "quantized",
                       **{s: {"passed": True, "x": 1} for s in ("structural", "vectors", "heldout", "greedy")},
                       "heldout_fp32": {"tokens": 5}},
    }


def test_round_trip_is_canonical_and_typed():
    d = _manifest()
    m = Manifest.from_json(d)
    assert m.target is TargetName.TFLITE and m.test_vectors.reference is VectorsReference.FAKE_QUANT
    assert m.tolerance == Tolerance(1e-4, 0.0, 0.99, False)
    assert m.report.passes == (PassResult("fuse_sdpa", 2, m.report.passes[0].declined),)
    assert isinstance(m.report.readback, Readback) and m.report.readback.bit_identical
    assert isinstance(m.validation, LadderResult) and m.validation["heldout_fp32"].passed is None
    assert m.model.num_kv_heads == 2 and m.model.details["attention_bias"] is True
    assert m.to_json() == json.loads(json.dumps(d))          # nothing lost, nothing invented
    text = m.dumps()
    assert Manifest.loads(text).dumps() == text
    assert list(json.loads(text)) == sorted(json.loads(text))   # sorted keys
    assert not m.exact and m.artifact_files() == ["model.tflite"]
    with pytest.raises(Exception):
        m.artifact = "other"                                      # frozen


@pytest.mark.parametrize("path,value", [
    (("model", "num_layers"), "2"), (("model", "num_layers"), True), (("tolerance", "atol"), -1.0),
    (("target",), "tensorflow"), (("test_vectors", "reference"), "fp64"), (("source", "checkpoint_sha256"), "zz"),
    (("files", "model.tflite"), "nothex"), (("validation", "greedy", "passed"), "yes"),
])
def test_a_bad_field_is_named(path, value):
    d = _manifest()
    node = d
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    with pytest.raises(BadInputError) as e:
        Manifest.from_json(d)
    assert e.value.code is ErrorCode.E_MANIFEST_INVALID
    assert e.value.details["field"].startswith(".".join(path[:2]) if path[0] != "files" else "files")


def test_missing_and_unknown_fields_are_named():
    d = _manifest()
    del d["test_vectors"]["file"]
    with pytest.raises(BadInputError) as e:
        Manifest.from_json(d)
    assert e.value.details["field"] == "test_vectors.file"
    d = _manifest()
    d["surprise"] = 1
    with pytest.raises(BadInputError) as e:
        Manifest.from_json(d)
    assert e.value.details["field"] == "surprise"
    d = _manifest()
    d["schema_version"] = 2
    with pytest.raises(BadInputError) as e:
        Manifest.from_json(d)
    assert e.value.code is ErrorCode.E_PACKAGE_SCHEMA


@pytest.mark.parametrize("field,bad", [
    ("artifact", "../model.tflite"), ("artifact", "/etc/passwd"), ("artifact", "a\\..\\b"), ("artifact", "C:/x"),
    ("artifact", "./model.tflite"), ("artifact", "sub//x"), ("artifact", "absent.tflite"),
    ("test_vectors.file", "../../vectors.safetensors"), ("test_vectors.file", "not_listed.safetensors"),
    ("runtime.litert_lm.file", "../bundle.litertlm"), ("quantization.recipe_file", "elsewhere.json"),
    ("tokenizer.files", "../tokenizer.json"),
])
def test_file_fields_never_leave_the_package(field, bad):
    d = _manifest()
    keys = field.split(".")
    node = d
    for k in keys[:-1]:
        node = node[k]
    node[keys[-1]] = [bad] if keys[-1] == "files" else bad
    with pytest.raises(BadInputError) as e:
        Manifest.from_json(d)
    assert e.value.code is ErrorCode.E_MANIFEST_INVALID
    assert e.value.details["field"].startswith(field)


def test_directory_artifact_is_the_prefix_of_its_files():
    d = _manifest()
    d["artifact"] = "model.mlpackage"
    d["files"] = {k: v for k, v in d["files"].items() if k != "model.tflite"}
    d["files"]["model.mlpackage/Manifest.json"] = SHA
    m = Manifest.from_json(d)
    assert m.artifact_files() == ["model.mlpackage/Manifest.json"]
    d["files"]["../escape"] = SHA
    with pytest.raises(BadInputError):
        Manifest.from_json(copy.deepcopy(d))
    assert check_relpath("a/b.json", "x") == "a/b.json"


def test_runtime_kit_records_import_only_the_standard_library():
    code = ("import sys; import slmpack.runtime.manifest, slmpack.runtime.errors, slmpack.runtime.records; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy', 'onnx', 'transformers') "
            "or (m.startswith('slmpack.') and not m.startswith('slmpack.runtime'))); print(bad); assert not bad")
    subprocess.run([sys.executable, "-c", code], check=True)
