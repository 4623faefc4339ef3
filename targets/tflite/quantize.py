"""Weight precision for LiteRT: what a QuantPlan may ask of this target, and how it is encoded.

Two sources of quantization, never mixed in one export:

* ``TFLitePrecision`` recipes (no plan): litert-torch's own recipes, applied to every
  FULLY_CONNECTED / EMBEDDING_LOOKUP weight by ai-edge-quantizer after conversion
  (``recipe_for``). fp16 and weight-only int8 keep fp32 compute; dynamic int8/int4 quantize
  activations at run time.
* a ``QuantPlan`` (calibration/plan.py), passed by the pipeline with programs traced from the
  plan's fake-quant reference: ``encode_plan`` rewrites the converted fp32 flatbuffer so that each
  quantized weight is stored as the plan's own integers (INT8 tensor, per-channel scales on axis 0,
  zero points 0) feeding a DEQUANTIZE op, which reproduces ``q * scale`` in fp32 exactly as the
  fake-quant reference computes it. Weights are found by content (sha256 of the fake-quant fp32
  bytes), so tied embedding / lm_head are one INT8 tensor. ``readback`` decodes the written file
  and compares every integer and scale with the plan.

What the encoder supports today (``capabilities``): symmetric int8 per-channel weights with float
activations (the ``int8`` preset). LiteRT itself can also carry int4 per-channel / block-wise
weights (BlockwiseQuantization) and dynamic-range int8 activations (hybrid FULLY_CONNECTED); those
are not encoded yet, so a plan asking for them is refused before calibration, naming the tensors.
Asymmetric weights are impossible in LiteRT (weight zero points must be 0), static int8
activations need a full-integer conversion (not done).
"""
from __future__ import annotations

from slmpack.exporter.spec import ModelSpec
from slmpack.targets.base import Unsupported
from slmpack.targets.tflite.options import TFLiteOptions, TFLitePrecision

_BLOCK = {TFLitePrecision.DYNAMIC_INT4_BLOCK32: 32, TFLitePrecision.DYNAMIC_INT4_BLOCK128: 128}


def capabilities(options: TFLiteOptions | None = None):
    """The QuantPlan features this target encodes (see module docstring)."""
    from slmpack.calibration.plan import TargetQuantCapabilities
    from slmpack.calibration.schemes import ActivationMode

    return TargetQuantCapabilities(
        name="tflite", weight_bits=frozenset({8}), group_sizes=frozenset({None}), asymmetric_weights=False,
        activation_modes=frozenset({ActivationMode.NONE}), embedding_bits=frozenset({8}))


def weight_shapes(spec: ModelSpec) -> dict[str, tuple[int, int]]:
    """Every 2-D weight of the reference module by name (what a QuantPlan is keyed by)."""
    d, f, h, kv, hd = spec.hidden_size, spec.intermediate_size, spec.num_heads, spec.num_kv_heads, spec.head_dim
    out = {"model.embed_tokens.weight": (spec.vocab_size, d), "lm_head.weight": (spec.vocab_size, d)}
    for i in range(spec.num_layers):
        p = f"model.layers.{i}."
        out.update({p + "self_attn.q_proj.weight": (h * hd, d), p + "self_attn.k_proj.weight": (kv * hd, d),
                    p + "self_attn.v_proj.weight": (kv * hd, d), p + "self_attn.o_proj.weight": (d, h * hd),
                    p + "mlp.gate_proj.weight": (f, d), p + "mlp.up_proj.weight": (f, d),
                    p + "mlp.down_proj.weight": (d, f)})
    return out


def unsupported(spec: ModelSpec, options: TFLiteOptions, plan=None) -> list[Unsupported]:
    out: list[Unsupported] = []
    block = _BLOCK.get(options.precision)
    if block:
        bad = sorted({n for n, (_, cols) in weight_shapes(spec).items() if cols % block}, key=str)
        if bad:
            out.append(Unsupported("precision", f"{options.precision.value} needs every weight's input dimension "
                                   f"to be a multiple of {block}; {len(bad)} are not (e.g. {bad[0]})"))
    if plan is None:
        return out
    if options.precision is not TFLitePrecision.FP32:
        out.append(Unsupported("precision", f"--tflite-precision {options.precision.value} cannot be combined with "
                               "a QuantPlan (the plan decides every weight's precision)"))
    if plan.quantized_names():
        from slmpack.errors import UnsupportedError

        try:
            plan.validate_against(weight_shapes(spec), capabilities(options))
        except UnsupportedError as e:
            out.append(Unsupported("quantization plan", e.message))
    return out


def recipe_for(precision: TFLitePrecision):
    """litert-torch QuantConfig for a precision, or None for fp32."""
    if precision is TFLitePrecision.FP32:
        return None
    from litert_torch.generative.quantize import quant_attrs, quant_recipes

    if precision is TFLitePrecision.FP16:
        return quant_recipes.full_fp16_recipe()
    if precision is TFLitePrecision.WEIGHT_ONLY_INT8:
        return quant_recipes.full_weight_only_recipe()
    if precision is TFLitePrecision.DYNAMIC_INT8:
        return quant_recipes.full_dynamic_recipe()
    granularity = {32: quant_attrs.Granularity.BLOCKWISE_32,
                   128: quant_attrs.Granularity.BLOCKWISE_128}[_BLOCK[precision]]
    return quant_recipes.full_dynamic_recipe(weight_dtype=quant_attrs.Dtype.INT4, granularity=granularity)


def _digest(a) -> str:
    import hashlib

    import numpy as np

    return hashlib.sha256(np.ascontiguousarray(a, dtype=np.float32).tobytes()).hexdigest()


def encode_plan(data: bytes, plan) -> tuple[bytes, dict]:
    """Store every quantized weight of ``plan`` as INT8 + DEQUANTIZE in the fp32 flatbuffer ``data``
    (converted from the plan's fake-quant reference). Returns new bytes and the encoding report."""
    import flatbuffers
    import numpy as np
    from ai_edge_litert import schema_py_generated as s

    from slmpack.errors import ToolchainError

    m = s.ModelT.InitFromPackedBuf(data, 0)
    by_digest = {}
    for i, b in enumerate(m.buffers):
        if b.data is not None and len(b.data):
            by_digest.setdefault(_digest(np.frombuffer(np.asarray(b.data, np.uint8).tobytes(), np.float32)), i)
    deq_code = next((i for i, c in enumerate(m.operatorCodes) if c.builtinCode == s.BuiltinOperator.DEQUANTIZE),
                    None)
    if deq_code is None:
        code = s.OperatorCodeT()
        code.builtinCode = code.deprecatedBuiltinCode = s.BuiltinOperator.DEQUANTIZE
        code.version = 1
        m.operatorCodes.append(code)
        deq_code = len(m.operatorCodes) - 1
    encoded, missing = {}, []
    for owner in sorted(plan.weights):
        qw = plan.weights[owner]
        b = by_digest.get(_digest(qw.dequantize().numpy()))
        if b is None:
            missing.append(owner)
            continue
        m.buffers[b].data = np.ascontiguousarray(qw.q.numpy().astype(np.int8)).view(np.uint8).ravel()
        encoded[owner] = {"buffer": b, "bits": qw.bits, "per_channel_axis": 0, "consumers": 0}
        for g in m.subgraphs:
            for ti in [i for i, t in enumerate(g.tensors) if t.buffer == b]:
                encoded[owner]["consumers"] += _dequantize_tensor(s, g, ti, qw, deq_code)
    if missing:
        raise ToolchainError(f"{len(missing)} quantized weight(s) of the plan are not in the converted model "
                             f"(e.g. {missing[0]}): cannot encode the plan", "E_TFLITE_QUANT_ENCODE",
                             details={"missing": missing})
    builder = flatbuffers.Builder(len(data) + (1 << 16))
    builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output()), {"scheme": "int8 per-channel weights + DEQUANTIZE (fp32 compute)",
                                     "tensors": encoded}


def _dequantize_tensor(s, g, ti: int, qw, deq_code: int) -> int:
    """Make tensor ``ti`` INT8 with the plan's scales and route its consumers through a new
    DEQUANTIZE output; returns the number of rewired consumer inputs."""
    import numpy as np

    t = g.tensors[ti]
    out = s.TensorT()
    out.shape, out.type, out.buffer = np.asarray(t.shape), s.TensorType.FLOAT32, 0
    out.name = (t.name.decode() if isinstance(t.name, bytes) else str(t.name)) + "/dequantize"
    g.tensors.append(out)
    oi = len(g.tensors) - 1
    t.type = s.TensorType.INT8
    q = s.QuantizationParametersT()
    q.scale = qw.scale[:, 0].numpy().astype(np.float32)
    q.zeroPoint = np.zeros(len(q.scale), np.int64)
    q.quantizedDimension = 0
    t.quantization = q
    rewired = 0
    for op in g.operators:
        ins = list(op.inputs)
        if ti in ins:
            op.inputs = [oi if x == ti else x for x in ins]
            rewired += ins.count(ti)
    deq = s.OperatorT()
    deq.opcodeIndex, deq.inputs, deq.outputs = deq_code, [ti], [oi]
    g.operators.insert(0, deq)
    return rewired


def readback(model_path, plan) -> dict:
    """Decode the INT8 weights and scales in ``model_path`` and compare them with ``plan``."""
    import numpy as np
    from ai_edge_litert import schema_py_generated as s

    m = s.ModelT.InitFromPackedBuf(open(model_path, "rb").read(), 0)
    stored = {}
    for g in m.subgraphs:
        for t in g.tensors:
            if t.type == s.TensorType.INT8 and t.buffer and m.buffers[t.buffer].data is not None:
                stored.setdefault(t.buffer, t)
    by_q = {}
    for b, t in stored.items():
        q = np.asarray(m.buffers[b].data, np.uint8).view(np.int8).reshape(list(t.shape))
        by_q.setdefault(q.tobytes(), (b, q, t.quantization))
    tensors, problems = {}, []
    for owner in sorted(plan.weights):
        qw = plan.weights[owner]
        want_q = qw.q.numpy().astype(np.int8)
        hit = by_q.get(want_q.tobytes())
        if hit is None:
            problems.append(f"{owner}: its integers are not stored in the model")
            continue
        b, q, qp = hit
        scales = np.asarray(qp.scale, np.float32) if qp is not None and qp.scale is not None else None
        s_ok = scales is not None and scales.tobytes() == qw.scale[:, 0].numpy().astype(np.float32).tobytes()
        zp_ok = qp is not None and (qp.zeroPoint is None or not np.asarray(qp.zeroPoint).any())
        dev = float(np.abs(q.astype(np.float32) * scales[:, None] - qw.dequantize().numpy()).max()) if s_ok else None
        tensors[owner] = {"buffer": b, "q_identical": True, "scales_identical": bool(s_ok),
                          "zero_points_identical": bool(zp_ok), "max_abs_dequant_deviation": dev}
        if not (s_ok and zp_ok):
            problems.append(f"{owner}: stored scales/zero points differ from the plan")
    devs = [t["max_abs_dequant_deviation"] for t in tensors.values() if t["max_abs_dequant_deviation"] is not None]
    return {"passed": not problems, "problems": problems, "tensors_checked": len(tensors),
            "bit_identical": bool(tensors) and all(t["scales_identical"] and t["zero_points_identical"]
                                                   for t in tensors.values()) and not problems,
            "max_abs_dequant_deviation": max(devs) if devs else None, "tensors": tensors}
