"""Read a Core ML package's stored weight encodings back and prove they are the QuantPlan's.

``readback(pkg_dir, plan)`` parses ``model.mlmodel`` (our MIL parser, as Core ML reads it: the
constexpr ops' own inputs/attributes and the weight blob file), finds the op recorded for each
quantized tensor in the model metadata (``slmpack.quantization``) and compares with the plan:

* integer codes and zero points identical; scales equal to the plan's scales in the storage dtype
  (fp32 programs: bit-identical; fp16 programs: the plan's scales rounded to fp16);
  palettized tables equal to ``(k - 2^(b-1) - zp) * scale`` in the storage dtype;
* every quantized plan tensor is covered;
* ``max_abs_dequant_deviation``: max |decompressed(artifact) - plan.dequantized| per tensor.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from slmpack.errors import SlmpackError
from slmpack.targets.coreml.quantize import META_KEY


def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)


def _op_args(fn, consts: dict, op) -> dict:
    from slmpack.runtime.mil.program import Literal

    args = {k: v for k, v in op.attributes.items() if k != "name"}
    for param, bindings in op.inputs.items():
        b = bindings[0]
        args[param] = b.value if isinstance(b, Literal) else consts[b]
    return args


def _compare(enc: dict, args: dict, qw) -> list[str]:
    dt = np.dtype(enc["scale_dtype"])
    q, scale = _np(qw.q).astype(np.int8), _np(qw.scale).astype(np.float32)
    zp = None if qw.zero_point is None else _np(qw.zero_point).astype(np.int8)
    out = []
    if enc["encoding"] == "constexpr_blockwise_shift_scale":
        if not np.array_equal(np.asarray(args["data"]).astype(np.int8), q):
            out.append("integer codes differ")
        if not np.array_equal(np.asarray(args["scale"]), scale.astype(dt)):
            out.append("scales differ")
        if (zp is None) != ("offset" not in args) or (zp is not None and not np.array_equal(
                np.asarray(args["offset"]).astype(np.int8), zp)):
            out.append("zero points differ")
    elif enc["encoding"] == "constexpr_affine_dequantize":
        if not np.array_equal(np.asarray(args["quantized_data"]).astype(np.int8), q):
            out.append("integer codes differ")
        if not np.array_equal(np.asarray(args["scale"]).reshape(-1), scale[:, 0].astype(dt)):
            out.append("scales differ")
        want_zp = np.zeros(q.shape[0], np.int8) if zp is None else zp[:, 0]
        if not np.array_equal(np.asarray(args["zero_point"]).astype(np.int8).reshape(-1), want_zp):
            out.append("zero points differ")
    else:  # constexpr_lut_to_dense
        half = 1 << (qw.bits - 1)
        codes = np.arange(1 << qw.bits, dtype=np.float32) - half
        zp32 = np.zeros_like(scale) if zp is None else zp.astype(np.float32)
        lut = ((codes[None, None, :] - zp32[:, :, None]) * scale[:, :, None])[..., None].astype(dt)
        if not np.array_equal(np.asarray(args["lut"]), lut):
            out.append("lookup tables differ")
        if not np.array_equal(np.asarray(args["indices"]).astype(np.int16) - half, q.astype(np.int16)):
            out.append("indices differ")
    return out


def readback(pkg_dir: Path, plan) -> dict:
    from slmpack.runtime.mil import load_mlpackage
    from slmpack.runtime.mil.registry import lookup

    try:
        program = load_mlpackage(Path(pkg_dir) / "model.mlpackage")
    except SlmpackError as e:
        return {"passed": False, "problems": [str(e)], "bit_identical": False, "max_abs_dequant_deviation": None,
                "tensors": {}}
    meta = dict(program.description.metadata.userDefined)
    encoded = json.loads(meta.get(META_KEY, "{}"))
    fn = program.functions["main"]
    consts = {op.outputs[0].name: op.attributes["val"] for op in fn.ops if op.type == "const"}
    ops = {op.name: op for op in fn.ops}
    problems, tensors, worst, bit_identical = [], {}, 0.0, True
    for owner in sorted({plan.owner(n) for n in plan.quantized_names()}):
        enc = encoded.get(owner)
        op = ops.get(enc["op"]) if enc else None
        if op is None or op.type != (enc or {}).get("encoding"):
            problems.append(f"{owner}: no {enc['encoding'] if enc else 'constexpr'} op in the package")
            continue
        args = _op_args(fn, consts, op)
        qw = plan.weights[owner]
        diffs = _compare(enc, args, qw)
        dense = np.asarray(lookup(op.type)(args, op), dtype=np.float32)
        dev = float(np.abs(dense - _np(plan.dequantized(owner)).astype(np.float32)).max())
        worst = max(worst, dev)
        bit_identical &= not diffs and enc["scale_dtype"] == "float32"
        problems += [f"{owner}: {d}" for d in diffs]
        tensors[owner] = {**enc, "identical": not diffs, "max_abs_dequant_deviation": dev}
    return {"passed": not problems, "problems": problems, "bit_identical": bool(bit_identical and not problems),
            "max_abs_dequant_deviation": worst, "tensors": tensors}
