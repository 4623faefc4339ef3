"""Quantized exports through the whole pipeline on a tiny model: package contents, read-back,
the quantized ladder, determinism. The demo-model acceptance export is ``@pytest.mark.slow``."""
from __future__ import annotations

import json

import pytest

from slmpack import api
from slmpack.calibration.plan import QuantPlan
from slmpack.config import ExportConfig, ValidationConfig
from slmpack.package import plan_sidecar, verify
from slmpack.quantize_config import QuantConfig
from slmpack.targets import registry

FAST = QuantConfig(recipe="int4", calib_windows=4, calib_window_tokens=64)
SHORT = ExportConfig(validation=ValidationConfig(heldout_tokens=256, greedy_tokens=8))


@pytest.fixture(scope="module")
def int4_pkg(quant_model, tmp_path_factory):
    return api.export(quant_model, "onnx", tmp_path_factory.mktemp("q") / "int4", config=SHORT, quant=FAST)


def test_int4_package_passes_quantized_ladder(int4_pkg):
    m = int4_pkg.manifest
    v = m["validation"]
    assert v["passed"], v
    assert v["heldout"]["reference"] == "fake_quant" and v["heldout"]["top1_agreement"] >= 0.99
    assert "perplexity_delta_pct" in v["heldout_fp32"] and "fake_quant_vs_fp32" in v["heldout_fp32"]
    q = m["quantization"]
    assert q["plan"] == "quant_plan.json" and q["readback_passed"] is True
    assert q["summary"]["by_weight_scheme"] == {"int4_g32_sym_rtn": 14, "int8_pc_sym_rtn": 2}
    assert m["precision"] == "int4+int8" and m["test_vectors"]["reference"] == "fake_quant"
    assert "quant_recipe.json" in m["files"] and not any(f.startswith("quant_plan") for f in m["files"])
    verify(int4_pkg.path)
    assert "com.microsoft::MatMulNBits" in m["report"]["op_types"]
    v = api.validate(int4_pkg.path)
    assert v["passed"] and v["readback"] == "passed"     # against the sidecar beside the package


def test_int4_readback_is_bit_identical(int4_pkg):
    plan = QuantPlan.load(plan_sidecar(int4_pkg.path))
    rb = registry.get("onnx").readback(int4_pkg.path, plan).to_json()
    assert rb["passed"] and rb["bit_identical"] and rb["max_abs_dequant_deviation"] == 0.0
    assert rb["tensors_checked"] == 16
    assert rb["tensors"]["lm_head.weight"]["op"] == "MatMul"  # tied int8: dequantizes the embedding's table at load
    assert rb["tensors"]["lm_head.weight"]["float_weight_identical"]
    assert rb["tensors"]["model.embed_tokens.weight"]["op"] == "GatherBlockQuantized"


def test_two_exports_are_byte_identical(int4_pkg, quant_model, tmp_path):
    again = api.export(quant_model, "onnx", tmp_path / "again", config=ExportConfig(validate=False), quant=FAST)
    for f in ("model.onnx", "quant_recipe.json"):
        assert (again.path / f).read_bytes() == (int4_pkg.path / f).read_bytes(), f
    for f in ("quant_plan.safetensors", "quant_plan.json"):
        assert (plan_sidecar(again.path) / f).read_bytes() == (plan_sidecar(int4_pkg.path) / f).read_bytes(), f


@pytest.mark.slow  # (int8 read-back identity is also covered, fast, by test_onnx_quant_encoding.py)
def test_int8_gptq_readback_identity(quant_model, tmp_path):
    cfg = QuantConfig(recipe="int8", algorithm="gptq", calib_windows=4, calib_window_tokens=64)
    pkg = api.export(quant_model, "onnx", tmp_path / "int8", config=ExportConfig(validate=False), quant=cfg)
    rb = pkg.manifest["report"]["readback"]
    assert rb["passed"] and rb["bit_identical"], rb["problems"]
    plan = QuantPlan.load(plan_sidecar(pkg.path))
    assert {d.weight.bits for d in plan.decisions.values()} == {8}
    assert json.loads((pkg.path / "quant_recipe.json").read_text())["name"] == "int8+gptq"
    assert pkg.manifest["precision"] == "int8"


@pytest.mark.slow
def test_demo_model_int4_acceptance(tmp_path):
    """The bundled demo model, int4 preset: quantized ladder passes, read-back identical, and the
    artifact is within 1.05 x (quantized bytes + float bytes) of the plan."""
    pkg = api.export(None, "onnx", tmp_path / "demo_int4", quant="int4")
    m = pkg.manifest
    assert m["validation"]["passed"], m["validation"]
    assert m["quantization"]["readback_passed"]
    s = m["quantization"]["summary"]
    size = (pkg.path / "model.onnx").stat().st_size
    assert size <= 1.05 * (s["quantized_bytes"] + 4 * s["float_params"]) + 200_000  # + rope tables, norms
