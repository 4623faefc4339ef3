"""ONNX encoding of QuantPlans on a small hand-built graph (no torch.export: fast).

The graph has the shapes of an exported decoder's weight uses: an embedding ``Gather`` on a
[V, H] table, ``MatMul`` on transposed [K, N] initializers, a tied lm_head reading the table
through ``Transpose``, and a fused q|k|v weight. For each plan the encoded graph must compute
the plan's fake-quant model in ONNX Runtime, and ``readback`` must find the plan's integers.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from slmpack.calibration.observers import fake_quant_activation
from slmpack.calibration.plan import ActivationQParams, QuantPlan, resolve_plan
from slmpack.calibration.recipe import Recipe, Rule
from slmpack.calibration.rtn import quantize_rtn
from slmpack.calibration.schemes import ActivationMode, ActivationScheme, WeightScheme
from slmpack.exporter.fake_quant import _dynamic_symmetric
from slmpack.targets.onnx import packing
from slmpack.targets.onnx.quantize import encode
from slmpack.targets.onnx.readback import readback

V, H, F = 64, 64, 96  # vocab, hidden, mlp width (96: per-channel needs repeated 32-wide blocks)
EMB, HEAD = "model.embed_tokens.weight", "lm_head.weight"
Q, K_, VV = (f"model.layers.0.self_attn.{p}_proj.weight" for p in "qkv")
UP, DOWN = "model.layers.0.mlp.up_proj.weight", "model.layers.0.mlp.down_proj.weight"
SHAPES = {EMB: (V, H), HEAD: (V, H), Q: (H, H), K_: (32, H), VV: (32, H), UP: (F, H), DOWN: (H, F)}


def _weights(seed=0):
    g = torch.Generator().manual_seed(seed)
    w = {n: torch.randn(*s, generator=g) * 0.1 for n, s in SHAPES.items()}
    w[HEAD] = w[EMB]
    return w


def _graph(w: dict, fuse_qkv: bool) -> onnx.ModelProto:
    """ids -> Gather -> x; x @ [q|k|v] -> concat-sum stand-in; up/down MLP; lm_head via Transpose."""
    t = lambda n: numpy_helper.from_array(np.ascontiguousarray(w[n].numpy().T), n + ".T")  # noqa: E731
    inits = [numpy_helper.from_array(w[EMB].numpy(), "table"), t(UP), t(DOWN)]
    nodes = [helper.make_node("Gather", ["table", "ids"], ["x"], axis=0)]
    if fuse_qkv:
        qkv = torch.cat([w[Q], w[K_], w[VV]]).numpy().T
        inits.append(numpy_helper.from_array(np.ascontiguousarray(qkv), "qkv.T"))
        nodes.append(helper.make_node("MatMul", ["x", "qkv.T"], ["qkv"]))
    else:
        inits += [t(Q), t(K_), t(VV)]
        nodes += [helper.make_node("MatMul", ["x", f"{n}.T"], [f"o{i}"]) for i, n in enumerate((Q, K_, VV))]
        nodes.append(helper.make_node("Concat", ["o0", "o1", "o2"], ["qkv"], axis=-1))
    inits += [numpy_helper.from_array(np.array([0], np.int64), "zero"),
              numpy_helper.from_array(np.array([H], np.int64), "hsz"),
              numpy_helper.from_array(np.array([-1], np.int64), "minus1")]
    nodes.append(helper.make_node("Slice", ["qkv", "zero", "hsz", "minus1"], ["qpart"]))
    nodes += [helper.make_node("Add", ["x", "qpart"], ["h1"]),
              helper.make_node("MatMul", ["h1", f"{UP}.T"], ["u"]),
              helper.make_node("MatMul", ["u", f"{DOWN}.T"], ["d"]),
              helper.make_node("Add", ["h1", "d"], ["h2"]),
              helper.make_node("Transpose", ["table"], ["table.T"], perm=[1, 0]),
              helper.make_node("MatMul", ["h2", "table.T"], ["logits"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, "s"])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, "s", V])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)])


def _plan(rules, w, acts=None) -> QuantPlan:
    base = resolve_plan(Recipe("t", tuple(rules)), SHAPES, embeddings=[EMB], ties={HEAD: EMB})
    weights = {n: quantize_rtn(w[n], d.weight.bits, d.weight.group_size, d.weight.symmetric)
               for n, d in base.decisions.items() if d.weight is not None and not d.tied_to}
    return QuantPlan(recipe="t", decisions=base.decisions, weights=weights, activations=acts or {})


def _traced_weights(plan, w) -> dict:
    """What the pipeline traces: the plan's dequantized weights (the fake-quant reference)."""
    return {n: plan.dequantized(n) if plan.decisions[n].weight is not None else w[n] for n in SHAPES}


def _block_steps(x: torch.Tensor, block: int | None) -> torch.Tensor:
    """One quantization step of symmetric dynamic int8 per element (its block's amax / 127)."""
    k = x.shape[-1]
    width = k if not block or k % block else block
    xb = x.reshape(*x.shape[:-1], k // width, width)
    step = xb.abs().amax(dim=-1, keepdim=True) / 127.0
    return step.expand_as(xb).reshape(x.shape)


def _fake_quant_forward(plan, w, ids, blocks=None):
    """numpy/torch reference of the graph with the plan's weights and activation fake-quant.

    Returns (logits, bound). ``bound`` is the kernel-semantic tolerance for runtimes that quantize
    activations themselves (dynamic int8): ONNX Runtime's kernels differ per CPU (AVX2 vs AVX-512
    VNNI / AMX) in how they round ``x / scale``, so each activation may land on the adjacent int8
    level. One step per element (plus the upstream error it inherits) is propagated through |W|
    exactly (this graph is linear). Static/weight-only plans are exact up to float rounding."""
    deq = {n: (plan.dequantized(n) if plan.decisions[n].weight is not None else w[n]) for n in SHAPES}

    def lin(x, err, n):
        d = plan.decisions[n]
        if d.activation.mode is ActivationMode.STATIC_INT8:
            a = plan.activations[n]
            x = fake_quant_activation(x, a.scale, a.zero_point)
        elif d.activation.mode is ActivationMode.DYNAMIC_INT8:
            b = (blocks or {}).get(n)
            err = err + _block_steps(x, b) * 1.01  # 1% for the block amax moving with upstream error
            x = _dynamic_symmetric(x, b)
        return x @ deq[n].T, err @ deq[n].abs().T

    x = deq[EMB][torch.as_tensor(ids)]
    zero = torch.zeros_like(x)
    q, eq = lin(x, zero, Q)
    h1, e1 = x + q, eq
    u, eu = lin(h1, e1, UP)
    d, ed = lin(u, eu, DOWN)
    h2, e2 = h1 + d, e1 + ed
    logits, el = lin(h2, e2, HEAD)
    return logits.numpy(), el.numpy()


W4 = WeightScheme(4, 32)
W4A = WeightScheme(4, 32, symmetric=False)
W8 = WeightScheme(8, None)
W4PC = WeightScheme(4, None)
DYN = ActivationScheme(mode=ActivationMode.DYNAMIC_INT8)
STAT = ActivationScheme(mode=ActivationMode.STATIC_INT8)

CASES = {
    "int8": [Rule("*", W8)],
    "int4": [Rule(EMB, W8), Rule(HEAD, W8), Rule("*", W4)],
    "int4_asym_emb4": [Rule("*", W4A)],
    "int4_per_channel": [Rule(EMB, W8), Rule(HEAD, W8), Rule("*", W4PC)],
    "8da4w": [Rule(EMB, W8), Rule(HEAD, W8, DYN), Rule("*", W4, DYN)],
    "w8a8": [Rule(EMB, W8), Rule("*", W8, STAT)],
}


@pytest.mark.parametrize("fuse", [False, True], ids=["separate", "fused_qkv"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_encoding_runs_the_plan_and_reads_back_identical(case, fuse, tmp_path):
    w = _weights()
    acts = None
    if case == "w8a8":
        acts = {n: ActivationQParams(scale=0.02 + 0.001 * i, zero_point=None if i % 2 else 3)
                for i, n in enumerate(sorted(SHAPES)) if n != EMB}
        if fuse:  # linears reading one input share one range
            acts[K_] = acts[VV] = acts[Q]
    plan = _plan(CASES[case], w, acts)
    model = _graph(_traced_weights(plan, w), fuse)
    report = encode(model, plan)
    onnx.checker.check_model(model)
    onnx.save(model, str(tmp_path / "model.onnx"))
    rb = readback(tmp_path, plan)
    assert rb["passed"], rb["problems"]
    assert rb["bit_identical"] and rb["max_abs_dequant_deviation"] == 0.0
    assert rb["tensors_checked"] == len(plan.quantized_names())
    assert not any(i.name in ("table", f"{UP}.T") for i in model.graph.initializer)  # float copies gone
    ids = np.array([[1, 5, 63, 7, 0, 2]], np.int64)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"ids": ids})[0][0]
    want, bound = _fake_quant_forward(plan, w, ids[0], report["dynamic_activation_blocks"])
    bound = bound + 1e-4 * max(1.0, np.abs(want).max())  # float rounding of the exact part
    assert (np.abs(got - want) <= bound).all(), (case, np.abs(got - want).max(), float(bound.min()))
    if case == "8da4w":
        assert set(report["dynamic_activation_blocks"]) == {n for n in SHAPES if n != EMB}
        # the one-step bound admits any rounding of x / scale: that activations are quantized at all
        # is the kernel choice (MatMulNBits accuracy_level 4 = int8 compute), checked here
        nbits = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
        assert nbits and all(a.i == 4 for n in nbits for a in n.attribute if a.name == "accuracy_level")


def encoded_with_edit(rules, name: str, edit, tmp_path):
    """Encode the test graph under ``rules``, change initializer ``name`` in place with
    ``edit(array)``, save it; (plan, readback of the saved model)."""
    w = _weights()
    plan = _plan(rules, w)
    model = _graph(_traced_weights(plan, w), False)
    encode(model, plan)
    for init in model.graph.initializer:
        if init.name == name:
            arr = numpy_helper.to_array(init).copy()
            edit(arr)
            init.CopyFrom(numpy_helper.from_array(arr, init.name))
    onnx.save(model, str(tmp_path / "model.onnx"))
    return plan, readback(tmp_path, plan)


def test_readback_catches_a_changed_integer(tmp_path):
    def flip(arr):
        arr.flat[0] ^= 0x01
    _, rb = encoded_with_edit(CASES["int4"], "model.layers.0.mlp.up_proj.qweight", flip, tmp_path)
    assert not rb["passed"] and rb["tensors"][UP]["q_identical"] is False
    assert any(UP in p for p in rb["problems"])


@pytest.mark.parametrize("bits", [4, 8])
def test_pack_unpack_roundtrip_low_nibble_first(bits):
    rng = np.random.default_rng(0)
    u = rng.integers(0, 1 << bits, (3, 64)).astype(np.uint8)
    p = packing.pack(u, bits)
    assert p.shape == (3, 64 * bits // 8)
    if bits == 4:
        assert p[0, 0] == u[0, 0] | (u[0, 1] << 4)
    assert np.array_equal(packing.unpack(p, bits, 64), u)
    q = packing.to_signed(u, bits)
    assert np.array_equal(packing.to_unsigned(q, bits), u)


@pytest.mark.parametrize("group,k,want", [(32, 256, 32), (None, 256, 256), (None, 704, 64), (None, 72, None),
                                          (8, 64, None)])
def test_block_choice(group, k, want):
    assert packing.nbits_block(group, k) == want
