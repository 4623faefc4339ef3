"""Declared support of the Core ML target, checked before any slow work, and the op table the
structural check uses.

* ``unsupported_features``: option / QuantPlan combinations Core ML cannot run at the chosen
  deployment target (a list of reasons; the pipeline raises ``UnsupportedError`` on any).
* ``EMITTED_OPS``: every MIL op type our lowering produces, with the Core ML specification
  version that introduced it (iOS17 = 8, iOS18 = 9). The structural check refuses a package that
  holds any other op, or one newer than its deployment target.
"""
from __future__ import annotations

from slmpack.exporter.spec import ModelSpec
from slmpack.targets.base import Unsupported
from slmpack.targets.coreml.options import CoreMLOptions, KVCache

IOS15, IOS16, IOS17, IOS18 = 6, 7, 8, 9

EMITTED_OPS: dict[str, int] = {
    # graph body (fp32 / fp16, iOS17 and iOS18)
    "const": IOS15, "cast": IOS15, "shape": IOS15, "gather": IOS15, "select": IOS15, "fill": IOS15,
    "add": IOS15, "sub": IOS15, "mul": IOS15, "real_div": IOS15, "pow": IOS15, "minimum": IOS15,
    "maximum": IOS15, "equal": IOS15, "less_equal": IOS15, "greater_equal": IOS15, "less": IOS15,
    "rsqrt": IOS15, "silu": IOS15, "softmax": IOS15, "reduce_mean": IOS15, "reduce_prod": IOS15,
    "linear": IOS15, "matmul": IOS15, "reshape": IOS15, "transpose": IOS15, "expand_dims": IOS15,
    "squeeze": IOS15, "slice_by_index": IOS15, "concat": IOS15, "tile": IOS15, "range_1d": IOS15,
    "scatter": IOS15,
    # family deltas: Gemma 2 (gelu-tanh MLP, tanh soft-caps, sliding-window mask), Phi-3 (LongRoPE switch)
    "gelu": IOS15, "tanh": IOS15, "greater": IOS15, "logical_and": IOS15, "reduce_max": IOS15,
    # GPT-2 and encoders (LayerNorm with bias); encoders: classification heads (tanh / relu), pooling
    # (mean: reduce_sum + clip; max: fill_like + reduce_max) and the L2 normalization (reduce_l2_norm)
    "layer_norm": IOS15, "relu": IOS15, "reduce_sum": IOS15, "clip": IOS15, "reduce_l2_norm": IOS15,
    "fill_like": IOS16,
    # mixture-of-experts routing (Mixtral, Granite MoE, Qwen2-MoE's shared-expert gate): exporter/moe.py
    "topk": IOS15, "sigmoid": IOS15,
    # attention fused by passes/fuse_sdpa.py (iOS18)
    "scaled_dot_product_attention": IOS18,
    # KV cache as state (iOS18): coremltools' coreml_update_state is serialized as write + read
    "read_state": IOS18, "write_state": IOS18, "slice_update": IOS18,
    # weight compression
    "constexpr_affine_dequantize": IOS16, "constexpr_blockwise_shift_scale": IOS18,
    "constexpr_lut_to_dense": IOS16,
}


def unsupported_features(spec: ModelSpec, options: CoreMLOptions, plan=None) -> list[Unsupported]:
    out: list[Unsupported] = []
    dt = options.deployment_target
    if options.kv_cache is KVCache.STATE and not dt.has_states:
        out.append(Unsupported("kv_cache=state", f"Core ML states (ct.StateType) need iOS 18 / macOS 15; "
                                                 f"deployment target is {dt.value} (use kv_cache=io or auto)"))
    if options.palettize and not dt.has_states:
        out.append(Unsupported("palettize", f"per-block lookup tables (iOS 18 constexpr_lut_to_dense) need "
                                            f"iOS 18 / macOS 15; deployment target is {dt.value}"))
    if plan is not None:
        out += _plan_problems(plan, options)
    return out


def _plan_problems(plan, options: CoreMLOptions) -> list[Unsupported]:
    out: list[Unsupported] = []
    ios18 = options.deployment_target.has_states
    for name, d in plan.decisions.items():
        mode = getattr(getattr(d.activation, "mode", None), "value", "none")
        if mode != "none":
            out.append(Unsupported(name, f"activation quantization ({mode}) is not implemented for Core ML"))
        w = d.weight
        if w is None or d.tied_to:
            continue
        if w.bits == 4 and not ios18:
            out.append(Unsupported(name, "int4 weights need constexpr_blockwise_shift_scale (iOS 18 / macOS 15); "
                                         f"deployment target is {options.deployment_target.value}"))
        elif w.group_size is not None and not ios18:
            out.append(Unsupported(name, f"per-block scales (group size {w.group_size}) need iOS 18 / macOS 15; "
                                         f"deployment target is {options.deployment_target.value}"))
    return out
