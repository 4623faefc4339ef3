"""Weight-only 8-bit weights in ONNX: stored as int8 (or the embedding's shared uint8 table) and
dequantized by a constant ``Cast -> [Sub] -> Mul -> Transpose`` chain that ONNX Runtime folds
at session creation into exactly ``plan.dequantized`` (never an 8-bit MatMulNBits: its
accuracy_level=0 x86 kernel is ~100x slower than a float MatMul in onnxruntime 1.32).

Hand-built graphs (fast) cover per-channel / grouped x symmetric / asymmetric, fused q|k|v and the
tied lm_head reading the GatherBlockQuantized table; one tiny-model export covers the pipeline.
"""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from slmpack.calibration.plan import QuantPlan, resolve_plan
from slmpack.calibration.recipe import Recipe, Rule
from slmpack.calibration.schemes import WeightScheme
from slmpack.package import plan_sidecar
from slmpack.targets.onnx.quantize import DEQUANT, META_KEY, encode, unsupported
from slmpack.targets.onnx.readback import readback
from tests.quant.test_onnx_quant_encoding import (CASES, EMB, HEAD, SHAPES, UP, W8, _fake_quant_forward, _graph,
                                                  _plan, _traced_weights, _weights, encoded_with_edit)

W8A = WeightScheme(8, None, symmetric=False)
W8G = WeightScheme(8, 32)
W8GA = WeightScheme(8, 32, symmetric=False)
WEIGHT_ONLY = {
    "pc_sym": [Rule("*", W8)],
    "pc_asym": [Rule("*", W8A)],
    "g32_sym": [Rule("*", W8G)],
    "g32_asym": [Rule("*", W8GA)],
    "int4_head8": CASES["int4"],  # int4 body, int8 per-channel embedding + tied lm_head
}
FOLDED_AWAY = {"Cast", "Sub", "Mul", "Reshape", "Transpose"}


def _optimized(model: onnx.ModelProto, path) -> tuple[ort.InferenceSession, onnx.ModelProto]:
    """A default (ORT_ENABLE_ALL) CPU session, and the graph it actually runs."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.optimized_model_filepath = str(path)
    so.log_severity_level = 3  # (the NCHWc note about serializing a level-ALL graph)
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess, onnx.load(str(path))


def _meta(model) -> dict:
    return json.loads({p.key: p.value for p in model.metadata_props}[META_KEY])


@pytest.mark.parametrize("fuse", [False, True], ids=["separate", "fused_qkv"])
@pytest.mark.parametrize("case", sorted(WEIGHT_ONLY))
def test_weight_only_int8_folds_into_the_plans_float_weight(case, fuse, tmp_path):
    w = _weights()
    plan = _plan(WEIGHT_ONLY[case], w)
    model = _graph(_traced_weights(plan, w), fuse)
    report = encode(model, plan)
    onnx.checker.check_model(model)
    eight = sorted(n for n in plan.quantized_names() if plan.decisions[n].weight.bits == 8 and n != EMB)
    assert report["dequantized_at_load"] == eight
    # no 8-bit MatMulNBits; the weights are stored as 8-bit integers, not floats
    assert not [n for n in model.graph.node if n.op_type == "MatMulNBits"
                and any(a.name == "bits" and a.i == 8 for a in n.attribute)]
    meta = _meta(model)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for entry in meta.values():
        if entry.get("encoding") == DEQUANT:
            assert entry["op"] == "MatMul"
            assert inits[entry["qweight"]].dtype == (np.uint8 if entry.get("shared_with") else np.int8)
    if case == "int4_head8":
        assert report["tensors"][HEAD]["shared_with"] == EMB  # reads the GatherBlockQuantized table
        assert report["tensors"][HEAD]["qweight"] == "model.embed_tokens.qweight"
    onnx.save(model, str(tmp_path / "model.onnx"))
    rb = readback(tmp_path, plan)
    assert rb["passed"], rb["problems"]
    assert rb["bit_identical"] and rb["max_abs_dequant_deviation"] == 0.0
    assert all(rb["tensors"][n]["float_weight_identical"] for n in eight)

    sess, opt = _optimized(model, tmp_path / "optimized.onnx")
    # ORT constant-folded every dequantize chain: plain MatMuls on fp32 initializers that are
    # bit-identical to the plan's dequantized weights
    assert not {n.op_type for n in opt.graph.node} & FOLDED_AWAY, [n.op_type for n in opt.graph.node]
    opt_inits = {i.name: i for i in opt.graph.initializer}
    by_name = {n.name: n for n in opt.graph.node}
    for node_name, entry in meta.items():
        if entry.get("encoding") != DEQUANT:
            continue
        mm = by_name[node_name]
        assert mm.op_type == "MatMul" and mm.input[1] in opt_inits, (node_name, mm.op_type, list(mm.input))
        folded = numpy_helper.to_array(opt_inits[mm.input[1]])
        want = np.concatenate([plan.dequantized(n).numpy() for n, _, _ in entry["tensors"]]).T
        assert folded.dtype == np.float32 and folded.tobytes() == np.ascontiguousarray(want).tobytes(), node_name

    ids = np.array([[1, 5, 63, 7, 0, 2]], np.int64)
    got = sess.run(None, {"ids": ids})[0][0]
    want, _ = _fake_quant_forward(plan, w, ids[0])
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max(), np.abs(got - want).max()


@pytest.mark.parametrize("target", ["qweight", "scales"])
def test_readback_catches_a_changed_int8_code_or_scale(target, tmp_path):
    def nudge(arr):
        arr.flat[5] = arr.flat[5] + 1 if target == "qweight" else np.nextafter(arr.flat[5], np.float32(1))
    _, rb = encoded_with_edit(WEIGHT_ONLY["g32_asym"], f"model.layers.0.mlp.up_proj.{target}", nudge, tmp_path)
    assert not rb["passed"] and not rb["bit_identical"]
    t = rb["tensors"][UP]
    assert t["float_weight_identical"] is False
    assert t["q_identical" if target == "qweight" else "scales_identical"] is False


def test_readback_catches_a_chain_that_computes_something_else(tmp_path):
    """The stored integers are right but the graph multiplies by other numbers."""
    w = _weights()
    plan = _plan(WEIGHT_ONLY["pc_sym"], w)
    model = _graph(_traced_weights(plan, w), False)
    encode(model, plan)
    for node in model.graph.node:
        if node.name == "/model/layers.0/mlp/up_proj/dequantize/Mul":
            other = numpy_helper.from_array(np.full((SHAPES[UP][0], 1), 0.01, np.float32), "other_scales")
            model.graph.initializer.append(other)
            node.input[1] = "other_scales"
    onnx.save(model, str(tmp_path / "model.onnx"))
    rb = readback(tmp_path, plan)
    assert not rb["passed"] and rb["tensors"][UP]["float_weight_identical"] is False
    assert rb["tensors"][UP]["q_identical"] and rb["tensors"][UP]["scales_identical"]


def test_weight_only_int8_needs_no_power_of_two_block():
    """K = 72 has no MatMulNBits block; the folded encoding does not need one (int4 still does)."""
    shapes = {"model.layers.0.mlp.down_proj.weight": (64, 72)}
    for scheme, ok in ((W8, True), (W8A, True), (WeightScheme(4, None), False)):
        plan = resolve_plan(Recipe("t", (Rule("*", scheme),)), shapes)
        assert (not unsupported(None, None, plan)) is ok, scheme


def test_tiny_model_int8_export(quant_model, tmp_path):
    from slmpack import api
    from slmpack.config import ExportConfig, ValidationConfig
    from slmpack.quantize_config import QuantConfig
    from slmpack.targets import registry
    from safetensors.numpy import load_file

    cfg = ExportConfig(validation=ValidationConfig(heldout_tokens=256, greedy_tokens=8))
    pkg = api.export(quant_model, "onnx", tmp_path / "int8", config=cfg,
                     quant=QuantConfig(recipe="int8", calib_windows=4, calib_window_tokens=64))
    m = pkg.manifest
    assert m["validation"]["passed"], m["validation"]
    assert "com.microsoft::MatMulNBits" not in m["report"]["op_types"]
    q = m["report"]["quantization"]
    plan = QuantPlan.load(plan_sidecar(pkg.path))
    assert set(q["dequantized_at_load"]) == {n for n in plan.quantized_names() if n != "model.embed_tokens.weight"}
    rb = registry.get("onnx").readback(pkg.path, plan).to_json()
    assert rb["passed"] and rb["bit_identical"] and rb["max_abs_dequant_deviation"] == 0.0, rb["problems"]
    assert rb["tensors"]["lm_head.weight"]["op"] == "MatMul"
    # ORT (default optimizations) vs the fake-quant reference logits of the test vectors
    vec = load_file(str(pkg.path / "test_vectors.safetensors"))
    ref = np.abs(vec["prefill_logits"]).max()
    assert m["validation"]["vectors"]["prefill_max_abs_diff"] <= 1e-5 * ref, m["validation"]["vectors"]
    assert m["validation"]["vectors"]["decode_max_abs_diff"] <= 1e-5 * ref, m["validation"]["vectors"]
    model = onnx.load(str(pkg.path / "model.onnx"))
    assert not [n for n in model.graph.node if n.op_type == "MatMulNBits"]
    _, opt = _optimized(model, tmp_path / "optimized.onnx")
    names = {n.name for n in opt.graph.node}
    left = [n for n in names if "/dequantize/" in n]
    assert not left, left[:5]  # every dequantize chain was folded at session creation
    assert not [n for n in opt.graph.node if n.op_type == "MatMulNBits"]
