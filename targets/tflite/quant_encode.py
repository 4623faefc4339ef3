"""Encode a QuantPlan's integers into a converted fp32 LiteRT flatbuffer, and read them back.

The flatbuffer was converted from the plan's fake-quant reference, so every quantized weight is a
constant buffer holding exactly ``plan.dequantized(name)``; it is found by content (sha256 of those
fp32 bytes; tied embedding / lm_head are one buffer) and replaced by the plan's integers. Per
consumer of the weight, one of three encodings (all measured against numpy with the installed
ai-edge-litert 2.3.0, both the default XNNPACK delegate and the builtin kernels):

``dequantize``  weight-only plans (float activations), int8 or int4, per-channel or group-wise:
    the integers are stored as an INT8 / INT4 tensor of shape ``[rows * n_groups, group]``
    (``[rows, cols]`` per-channel) with one float32 scale per stored row (per-channel
    quantization on axis 0, zero points 0), followed by DEQUANTIZE (and a RESHAPE back to
    ``[rows, cols]`` when grouped). DEQUANTIZE reproduces ``q * scale`` bit-exactly in fp32
    (checked through an identity FULLY_CONNECTED), so the graph computes the fake-quant reference.
    INT4 is packed two values per byte, low nibble first.
``hybrid``      int8 per-channel weights with dynamic int8 activations: the INT8 tensor feeds
    FULLY_CONNECTED directly (LiteRT's hybrid kernel). XNNPACK quantizes the activations per row
    *asymmetrically* whatever ``asymmetric_quantize_inputs`` says (the builtin kernel honours the
    flag), so the flag is set to true and both runtimes compute per-token asymmetric int8
    activations (``scale = (max - min) / 255`` over a range widened to 0), i.e. the plan's
    fake-quant reference with ``symmetric = false`` activations (max deviation vs numpy ~5e-6).
``blockwise``   int4 group-wise weights with dynamic int8 activations: an INT4 ``[rows, cols]``
    tensor with ``BlockwiseQuantization`` (block along the input axis, scales a separate
    ``[rows, n_groups]`` FLOAT16 tensor, no zero points) feeding FULLY_CONNECTED, the layout
    ai-edge-quantizer writes. XNNPACK rounds the fp16 scales to bfloat16, so the scales are stored
    bfloat16-rounded (as ai-edge-quantizer does) to make both runtimes agree: the one encoding that
    is not bit-exact, each scale is within 2^-8 relative of the plan's (``readback`` reports it).

Status: only ``dequantize`` is reachable from the pipeline (quantize.capabilities refuses dynamic
activations): ``hybrid`` / ``blockwise`` match numpy on one FULLY_CONNECTED, but a whole exported
model diverged from the activation fake-quant reference on prefill rows > 1 (builtin) / > 7
(XNNPACK) when q_proj alone was hybrid, while lm_head alone was exact; not understood yet.

Measured and not used: DEQUANTIZE ignores BlockwiseQuantization (the output is wrong, not an
error); blockwise FULLY_CONNECTED rejects FLOAT32 scales; an INT4 per-channel filter on
FULLY_CONNECTED runs under XNNPACK only (the builtin hybrid kernel returns garbage).
"""
from __future__ import annotations

import hashlib

import numpy as np

BF16_SCALE_RTOL = 2.0 ** -8   # round-to-nearest into bfloat16 (8 significant bits): half an ulp


def _digest(a) -> str:
    return hashlib.sha256(np.ascontiguousarray(a, dtype=np.float32).tobytes()).hexdigest()


def pack_int4(q: np.ndarray) -> np.ndarray:
    """Signed values in [-8, 7] -> bytes, two per byte, low nibble first (odd count: zero pad)."""
    u = (np.ascontiguousarray(q, np.int8).ravel() & 0xF).astype(np.uint8)
    if len(u) % 2:
        u = np.append(u, np.uint8(0))
    return (u[0::2] | (u[1::2] << 4)).astype(np.uint8)


def unpack_int4(data: np.ndarray, n: int) -> np.ndarray:
    b = np.asarray(data, np.uint8)
    lo, hi = (b & 0xF).astype(np.int8), (b >> 4).astype(np.int8)
    out = np.stack([lo, hi], axis=1).ravel()[:n]
    return np.where(out > 7, out - 16, out).astype(np.int8)


def bf16_round(scale: np.ndarray) -> np.ndarray:
    """float32 -> nearest bfloat16 value (ties to even), returned as float16 (what is stored)."""
    import ml_dtypes

    return np.asarray(scale, np.float32).astype(ml_dtypes.bfloat16).astype(np.float16)


def scheme_of(d, qw=None) -> str | None:
    """The encoding of one decision's consumer (see module docstring), None if not encodable."""
    from slmpack.calibration.schemes import ActivationMode

    w, mode = d.weight, d.activation.mode
    if w is None or not w.symmetric or w.bits not in (4, 8):
        return None
    if mode is ActivationMode.NONE:
        return "dequantize"
    if mode is not ActivationMode.DYNAMIC_INT8 or d.activation.symmetric or d.kind != "linear":
        return None
    if w.bits == 8 and w.group_size is None:
        return "hybrid"
    if w.bits == 4 and w.group_size is not None:
        return "blockwise"
    return None


class _Model:
    def __init__(self, data: bytes):
        from ai_edge_litert import schema_py_generated as s

        self.s = s
        self.m = s.ModelT.InitFromPackedBuf(data, 0)
        self._codes: dict[int, int] = {}

    def opcode(self, builtin: int) -> int:
        if builtin not in self._codes:
            codes = self.m.operatorCodes
            hit = next((i for i, c in enumerate(codes) if c.builtinCode == builtin), None)
            if hit is None:
                c = self.s.OperatorCodeT()
                c.builtinCode = c.deprecatedBuiltinCode = builtin
                c.version = 1
                codes.append(c)
                hit = len(codes) - 1
            self._codes[builtin] = hit
        return self._codes[builtin]

    def buffer(self, data: np.ndarray) -> int:
        b = self.s.BufferT()
        b.data = np.ascontiguousarray(data).view(np.uint8).ravel()
        self.m.buffers.append(b)
        return len(self.m.buffers) - 1

    def tensor(self, g, shape, ttype, buffer: int, name: str, quant=None) -> int:
        t = self.s.TensorT()
        t.shape, t.type, t.buffer, t.name, t.quantization = np.asarray(shape, np.int32), ttype, buffer, name, quant
        g.tensors.append(t)
        return len(g.tensors) - 1

    def pack(self, size_hint: int) -> bytes:
        import flatbuffers

        builder = flatbuffers.Builder(size_hint + (1 << 16))
        builder.Finish(self.m.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())


def _name(t) -> str:
    return t.name.decode() if isinstance(t.name, bytes) else str(t.name)


def _per_channel(s, scale: np.ndarray, axis: int = 0):
    q = s.QuantizationParametersT()
    q.scale = np.asarray(scale, np.float32).ravel()
    q.zeroPoint = np.zeros(len(q.scale), np.int64)
    q.quantizedDimension = axis
    return q


def encode_plan(data: bytes, plan) -> tuple[bytes, dict]:
    """Store every quantized weight of ``plan`` in the fp32 flatbuffer ``data`` (converted from the
    plan's fake-quant reference) as the plan's integers. Returns new bytes and the encoding report."""
    from slmpack.errors import ToolchainError

    mod = _Model(data)
    m, s = mod.m, mod.s
    by_digest = {}
    for i, b in enumerate(m.buffers):
        if b.data is not None and len(b.data):
            by_digest.setdefault(_digest(np.frombuffer(np.asarray(b.data, np.uint8).tobytes(), np.float32)), i)
    encoded, missing = {}, []
    for owner in sorted(plan.weights):
        qw = plan.weights[owner]
        b = by_digest.get(_digest(qw.dequantize().numpy()))
        if b is None:
            missing.append(owner)
            continue
        names = [n for n, d in plan.decisions.items() if (d.tied_to or n) == owner and d.weight is not None]
        linear = next((plan.decisions[n] for n in names if plan.decisions[n].kind == "linear"), None)
        fc_scheme = scheme_of(linear) if linear is not None else "dequantize"
        if fc_scheme is None:   # unsupported() refuses these before calibration
            raise ToolchainError(f"{linear.name}: {linear.weight.label} with {linear.activation.label} "
                                 "activations has no LiteRT encoding", "E_TFLITE_QUANT_ENCODE")
        m.buffers[b].data = None   # replaced by the encodings' own buffers (indices stay stable)
        rep = encoded[owner] = {"bits": qw.bits, "group_size": qw.group_size, "schemes": {}}
        cache: dict[str, int] = {}
        for g in m.subgraphs:
            for ti in [i for i, t in enumerate(g.tensors) if t.buffer == b]:
                _encode_tensor(mod, g, ti, qw, fc_scheme, cache, rep["schemes"])
    if missing:
        raise ToolchainError(f"{len(missing)} quantized weight(s) of the plan are not in the converted model "
                             f"(e.g. {missing[0]}): cannot encode the plan", "E_TFLITE_QUANT_ENCODE",
                             details={"missing": missing})
    used = sorted({k for t in encoded.values() for k in t["schemes"]})
    return mod.pack(len(data)), {"scheme": "+".join(used), "schemes": {
        "dequantize": "int8/int4 per-channel or per-group (stored as rows*groups channels) + DEQUANTIZE "
                      "(+RESHAPE), fp32 compute",
        "hybrid": "int8 per-channel FULLY_CONNECTED, dynamic per-row asymmetric int8 activations",
        "blockwise": "int4 BlockwiseQuantization FULLY_CONNECTED (bf16-rounded fp16 scales), dynamic "
                     "per-row asymmetric int8 activations"}, "tensors": encoded}


def _encode_tensor(mod: _Model, g, ti: int, qw, fc_scheme: str, cache: dict, counts: dict) -> None:
    """Give every consumer of the fp32 weight tensor ``ti`` its encoding of ``qw``."""
    s, m = mod.s, mod.m
    t = g.tensors[ti]
    rows, cols = (int(x) for x in t.shape)
    q = qw.q.numpy().astype(np.int8)
    scale = qw.scale.numpy().astype(np.float32)
    gs = qw.group_size or cols
    itype = s.TensorType.INT4 if qw.bits == 4 else s.TensorType.INT8
    fc = mod.opcode(s.BuiltinOperator.FULLY_CONNECTED)
    pack = (lambda a: pack_int4(a)) if qw.bits == 4 else (lambda a: np.ascontiguousarray(a, np.int8))
    base = _name(t)
    made: dict[str, int] = {}

    def stored(kind: str) -> int:   # the integer tensor this consumer reads, made once per subgraph
        if kind in made:
            return made[kind]
        if kind == "blockwise":
            if "scales" not in cache:
                cache["scales"] = mod.buffer(bf16_round(scale))
            sti = mod.tensor(g, list(scale.shape), s.TensorType.FLOAT16, cache["scales"], base + "/scales")
            qp = s.QuantizationParametersT()
            qp.detailsType = s.QuantizationDetails.BlockwiseQuantization
            bd = s.BlockwiseQuantizationT()
            bd.scales, bd.zeroPoints, bd.blockSize = sti, -1, int(gs)
            qp.details, qp.quantizedDimension = bd, 0
            key, shape = "blockwise", [rows, cols]
        elif kind == "hybrid":
            qp, key, shape = _per_channel(s, scale[:, 0]), "per_channel", [rows, cols]
        else:   # dequantize: one channel per (row, group)
            qp, shape = _per_channel(s, scale.ravel()), [rows * (cols // gs), gs]
            key = "per_channel" if gs == cols else "per_group"
        if key not in cache:
            cache[key] = mod.buffer(pack(q))
        made[kind] = mod.tensor(g, shape, itype, cache[key], f"{base}/{kind}", qp)
        t.buffer = 0   # the fp32 tensor is no longer read (its buffer was emptied)
        if kind == "dequantize":
            deq = mod.tensor(g, shape, s.TensorType.FLOAT32, 0, base + "/dequantize")
            ops = [_op(s, mod.opcode(s.BuiltinOperator.DEQUANTIZE), [made[kind]], [deq])]
            if shape != [rows, cols]:
                shp = mod.tensor(g, [2], s.TensorType.INT32, mod.buffer(np.asarray([rows, cols], np.int32)),
                                 base + "/shape")
                out = mod.tensor(g, [rows, cols], s.TensorType.FLOAT32, 0, base + "/dequantize_reshaped")
                ops.append(_op(s, mod.opcode(s.BuiltinOperator.RESHAPE), [deq, shp], [out]))
                deq = out
            g.operators[0:0] = ops
            made["dequantized"] = deq
        return made[kind]

    for op in list(g.operators):
        ins = list(op.inputs)
        for pos, x in enumerate(ins):
            if x != ti:
                continue
            kind = fc_scheme if (op.opcodeIndex == fc and pos == 1) else "dequantize"
            ins[pos] = stored(kind)
            if kind == "dequantize":
                ins[pos] = made["dequantized"]
            else:
                op.builtinOptions.asymmetricQuantizeInputs = True
            counts[kind] = counts.get(kind, 0) + 1
        op.inputs = ins


def _op(s, code: int, inputs, outputs):
    op = s.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = code, list(inputs), list(outputs)
    return op


# ---- read-back ---------------------------------------------------------------------------------------
def _stored_weights(m, s):
    """{flat int8 bytes: (q flat, scales [n_channels or rows, groups], block, scale dtype)} of every
    INT8/INT4 constant tensor in the model."""
    out = {}
    for g in m.subgraphs:
        for t in g.tensors:
            if t.type not in (s.TensorType.INT8, s.TensorType.INT4) or not t.buffer:
                continue
            data = m.buffers[t.buffer].data
            if data is None or not len(data):
                continue
            shape = [int(x) for x in t.shape]
            n = int(np.prod(shape))
            raw = np.asarray(data, np.uint8)
            q = unpack_int4(raw, n) if t.type == s.TensorType.INT4 else raw.view(np.int8)[:n]
            qp = t.quantization
            if qp is None:
                continue
            if qp.detailsType == s.QuantizationDetails.BlockwiseQuantization:
                st = g.tensors[qp.details.scales]
                sc = np.frombuffer(np.asarray(m.buffers[st.buffer].data, np.uint8).tobytes(), np.float16)
                entry = ("blockwise", q, sc.reshape(shape[0], -1), None)
            else:
                sc = np.asarray(qp.scale if qp.scale is not None else [], np.float32)
                entry = ("per_channel", q, sc.reshape(len(sc), 1) if len(sc) else sc, qp.zeroPoint)
            out.setdefault((q.tobytes(), entry[0], t.type), entry)
    return out


def readback(model_path, plan) -> dict:
    """Decode the stored weights/scales in ``model_path`` and compare them with ``plan``: integers
    must be identical, scales identical (float32 per-channel / per-group) or, for blockwise int4,
    the plan's scales rounded to bfloat16 (each within ``BF16_SCALE_RTOL`` relative)."""
    from ai_edge_litert import schema_py_generated as s

    m = s.ModelT.InitFromPackedBuf(open(model_path, "rb").read(), 0)
    stored = _stored_weights(m, s)
    by_q: dict[bytes, list] = {}
    for (qbytes, _kind, _tt), entry in stored.items():
        by_q.setdefault(qbytes, []).append(entry)
    tensors, problems = {}, []
    for owner in sorted(plan.weights):
        qw = plan.weights[owner]
        want_q = qw.q.numpy().astype(np.int8)
        want_s = qw.scale.numpy().astype(np.float32)
        hits = by_q.get(want_q.tobytes())
        if not hits:
            problems.append(f"{owner}: its integers are not stored in the model")
            continue
        rows, cols = want_q.shape
        info = {"q_identical": True, "encodings": [], "scales_identical": True, "zero_points_identical": True,
                "max_abs_dequant_deviation": 0.0, "max_rel_scale_deviation": 0.0}
        for kind, q, sc, zp in hits:
            info["encodings"].append(kind)
            if kind == "blockwise":
                got = sc.astype(np.float32)
                ok = got.shape == want_s.shape and got.tobytes() == bf16_round(want_s).astype(np.float32).tobytes()
                exact = ok and got.tobytes() == want_s.tobytes()
            else:
                got = sc.reshape(rows, -1) if sc.size == want_s.size else None
                ok = exact = got is not None and got.tobytes() == want_s.tobytes()
                if zp is not None and np.asarray(zp).any():
                    info["zero_points_identical"] = False
            if got is None or got.shape != want_s.shape:
                problems.append(f"{owner}: stored {kind} scales have the wrong shape")
                info["scales_identical"] = False
                continue
            info["scales_identical"] &= bool(exact)
            rel = float((np.abs(got - want_s) / np.abs(want_s)).max())
            info["max_rel_scale_deviation"] = max(info["max_rel_scale_deviation"], rel)
            deq = (q.reshape(rows, got.shape[1], -1).astype(np.float32) * got[:, :, None]).reshape(rows, cols)
            info["max_abs_dequant_deviation"] = max(info["max_abs_dequant_deviation"],
                                                    float(np.abs(deq - qw.dequantize().numpy()).max()))
            if not ok or rel > BF16_SCALE_RTOL:
                problems.append(f"{owner}: stored {kind} scales differ from the plan")
        if not info["zero_points_identical"]:
            problems.append(f"{owner}: stored zero points are not 0")
        tensors[owner] = info
    devs = [t["max_abs_dequant_deviation"] for t in tensors.values()]
    return {"passed": not problems, "problems": problems, "tensors_checked": len(tensors),
            "bit_identical": bool(tensors) and not problems and all(
                t["scales_identical"] and t["zero_points_identical"] for t in tensors.values()),
            "max_abs_dequant_deviation": max(devs) if devs else None,
            "max_rel_scale_deviation": max((t["max_rel_scale_deviation"] for t in tensors.values()), default=None),
            "tensors": tensors}
