"""Encode a QuantPlan's weights natively in the Core ML program (compile-time constexpr ops).

The plan is the single source of truth (``calibration/plan.py``): integer weights ``q`` int8
``[rows, cols]`` (int4 held unpacked in [-8, 7]), float32 scales ``[rows, n_groups]``, optional int8
zero points ``[rows, n_groups]``; dequantization is ``(q - zp) * scale`` per group. This pass packs
*exactly those numbers*; it never re-quantizes:

* iOS 18 / macOS 15: ``constexpr_blockwise_shift_scale(data=int4|int8 [rows, cols],
  scale=[rows, n_groups], offset=zp)``: per-channel (n_groups = 1) and per-block alike;
* iOS 17 / macOS 14: ``constexpr_affine_dequantize(quantized_data=int8, scale=[rows],
  zero_point=[rows], axis=0)``: int8 per-channel only (others are refused in ``ops.py``);
* ``palettize`` (iOS 18): ``constexpr_lut_to_dense`` with one 2^bits-entry table per block,
  entry ``k = (k - 2^(b-1) - zp) * scale``: the same values as a lookup table.

Scales take the dtype of the weight they replace (fp16 in an fp16 program), so the dequantized
weight is what the rest of the program would have read. Float-override tensors (AWQ/SmoothQuant
folds) are not the target's job: the traced program already carries them.
"""
from __future__ import annotations

import numpy as np

from slmpack.errors import ToolchainError
from slmpack.targets.coreml.options import CoreMLOptions

META_KEY = "slmpack.quantization"   # model metadata: {tensor: {"op", "encoding", "bits", "group_size"}}


def capabilities(options: CoreMLOptions):
    """What a QuantPlan may ask of this target (checked before any calibration)."""
    from slmpack.calibration.plan import TargetQuantCapabilities
    from slmpack.calibration.schemes import ActivationMode

    ios18 = options.deployment_target.has_states
    groups = frozenset({None, 8, 16, 32, 64, 128, 256}) if ios18 else frozenset({None})
    bits = frozenset({4, 8}) if ios18 else frozenset({8})
    return TargetQuantCapabilities(name="coreml", weight_bits=bits, group_sizes=groups, asymmetric_weights=True,
                                   activation_modes=frozenset({ActivationMode.NONE}), embedding_bits=bits)


def encoding_name(options: CoreMLOptions) -> str:
    if options.palettize:
        return "constexpr_lut_to_dense"
    return "constexpr_blockwise_shift_scale" if options.deployment_target.has_states else "constexpr_affine_dequantize"


def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)


def _weight_consts(prog) -> dict:
    func = prog.functions["main"]
    return {op.outputs[0].name: op for op in func.operations if op.op_type == "const"}


def _find_const(consts: dict, placeholder: str):
    for name in (placeholder, f"{placeholder}_to_fp16"):
        if name in consts:
            return consts[name]
    return None


def encode(qw, dtype, options: CoreMLOptions, name: str):
    """The constexpr op (pymil var) for one QuantizedWeight; call inside a block context."""
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    q, scale = _np(qw.q).astype(np.int8), _np(qw.scale).astype(dtype)
    zp = None if qw.zero_point is None else _np(qw.zero_point).astype(np.int8)
    half = 1 << (qw.bits - 1)
    if options.palettize:
        codes = np.arange(1 << qw.bits, dtype=np.float32) - half                  # [2^b]
        zp32 = np.zeros_like(scale, dtype=np.float32) if zp is None else zp.astype(np.float32)
        lut = (codes[None, None, :] - zp32[:, :, None]) * scale.astype(np.float32)[:, :, None]
        idx_dtype = types.np_uint4_dtype if qw.bits == 4 else np.uint8
        return mb.constexpr_lut_to_dense(indices=(q.astype(np.int16) + half).astype(np.uint8).astype(idx_dtype),
                                         lut=lut[..., None].astype(dtype), name=name)
    if options.deployment_target.has_states:  # iOS 18 opset
        data_dtype = types.np_int4_dtype if qw.bits == 4 else np.int8
        kwargs = {"data": q.astype(data_dtype), "scale": scale, "name": name}
        if zp is not None:
            kwargs["offset"] = zp.astype(data_dtype)
        return mb.constexpr_blockwise_shift_scale(**kwargs)
    if qw.bits != 8 or scale.shape[1] != 1:
        raise ToolchainError(f"{name}: only int8 per-channel weights can be encoded before iOS 18",
                             "E_COREML_QUANT")
    zero = np.zeros(q.shape[0], np.int8) if zp is None else zp[:, 0]
    return mb.constexpr_affine_dequantize(quantized_data=q, scale=scale[:, 0], zero_point=zero, axis=np.int32(0),
                                          name=name)


def apply_plan(prog, plan, param_names: dict[str, str], options: CoreMLOptions) -> dict[str, dict]:
    """Replace each quantized weight const by its constexpr encoding.

    ``param_names`` maps the program's parameter placeholders to checkpoint tensor names. Every
    quantized tensor of the plan must be found (tied tensors share one const): nothing is skipped.
    Returns {owner tensor: {"op", "encoding", "bits", "group_size"}} (for the report and read-back).
    """
    from coremltools.converters.mil import Builder as mb

    consts = _weight_consts(prog)
    by_owner: dict[str, list[str]] = {}
    for placeholder, tensor in param_names.items():
        if tensor in plan.decisions and plan.decisions[tensor].weight is not None:
            by_owner.setdefault(plan.owner(tensor), []).append(placeholder)
    wanted = sorted({plan.owner(n) for n in plan.quantized_names()})
    missing = [n for n in wanted if n not in by_owner]
    if missing:
        raise ToolchainError(f"quantized tensors not found in the traced program: {missing}", "E_COREML_QUANT")
    encoded: dict[str, dict] = {}
    for owner in wanted:
        qw = plan.weights.get(owner)
        if qw is None:
            raise ToolchainError(f"plan has no numbers for {owner!r} (not calibrated)", "E_COREML_QUANT")
        # tied tensors (lm_head / embed_tokens) have one placeholder each but coremltools keeps one const
        found = [(p, op) for p in sorted(set(by_owner[owner])) if (op := _find_const(consts, p)) is not None]
        if len(found) != 1:
            raise ToolchainError(f"expected one weight const for {owner!r}, found {[p for p, _ in found]} "
                                 f"(placeholders {sorted(by_owner[owner])})", "E_COREML_QUANT")
        placeholder, op = found[0]
        var = op.outputs[0]
        if tuple(var.shape) != tuple(qw.q.shape):
            raise ToolchainError(f"{owner}: program weight {tuple(var.shape)} vs plan {tuple(qw.q.shape)}",
                                 "E_COREML_QUANT")
        dtype = np.float16 if var.dtype.__name__ == "fp16" else np.float32
        name = f"{placeholder}_{'lut' if options.palettize else 'q'}"
        with op.enclosing_block, mb.set_before_op(op):
            new = encode(qw, dtype, options, name=name)
        op.enclosing_block.replace_uses_of_var_after_op(anchor_op=op, old_var=var, new_var=new)
        op.enclosing_block.remove_ops([op])
        encoded[owner] = {"op": new.op.name, "encoding": encoding_name(options), "bits": int(qw.bits),
                          "group_size": qw.group_size, "scale_dtype": np.dtype(dtype).name}
    return encoded
