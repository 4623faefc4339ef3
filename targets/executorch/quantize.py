"""Encode a QuantPlan's integer weights the way XNNPACK executes them.

Each quantized Linear weight becomes a torchao ``IntxUnpackedToInt8Tensor`` built directly from
the plan's numbers (int8 storage, int4 unpacked in [-8, 7], float32 scales ``[out, n_groups]``,
``block_size = (1, group_size or in_features)``): no re-quantization, the target packs exactly the
plan's integers. ``torch.export`` turns it into ``dequantize_affine(q, scale)`` (+ the per-token
``choose_qparams/quantize/dequantize`` of the activation for dynamic int8), the pattern
XnnpackPartitioner fuses into one quantized GEMM.

What XNNPACK (executorch 1.5.1) runs, hence what ``plan_problems`` accepts:

* Linear, dynamic int8 per-token activations x int8 per-channel weights   (qd8-f32-qc8w)
* Linear, dynamic int8 per-token activations x int4 group-wise weights, group a multiple of 32
  (8da4w, qd8-f32-qb4w). XNNPACK keeps group-wise scales in bf16
  (``operators/node_visitor.py: get_quant_params``), so the executed scales are the plan's
  float32 scales rounded to bf16 (relative change <= 2^-9); reported, not hidden.
* Embeddings of any plan scheme: the gather runs on the plan's dequantized values (float32
  table), numerically identical to the plan; the int8 storage saving is not realised.

Refused before any slow work (each with the reason):
* weight-only Linear (float activations): XnnpackPartitioner 1.5.1 claims ``dequantize + linear``
  with float activations and then computes wrong results (torchao ``IntxWeightOnlyConfig`` int8
  per-axis on a 64->32 linear: max error 1.7e3 against the eager module); there is no XNNPACK
  weight-only GEMM path in this executorch, so no correct delegated encoding exists.
* asymmetric weights: XNNPACK's qc8w/qc4w/qb4w weight formats carry scales only, no zero points.
* int8 group-wise weights: XNNPACK group-wise quantization is 4-bit only.
* static int8 activations: needs the PT2E quantizer flow (observers folded into q/dq pairs), not
  implemented for this target yet.
* quantized plans with fp16/bf16 programs: dynamic-quant GEMMs here take fp32 activations.
"""
from __future__ import annotations

import torch
from torch import nn

from slmpack.errors import BadInputError
from slmpack.exporter.spec import ModelSpec
from slmpack.targets.base import Unsupported
from slmpack.targets.executorch.options import EtPrecision, ExecuTorchOptions

XNNPACK_GROUP_MULTIPLE = 32


def _mode(decision) -> tuple[str | None, str | None]:
    """(encoding name, None) or (None, reason it cannot run on XNNPACK)."""
    from slmpack.calibration.schemes import ActivationMode

    w, act = decision.weight, decision.activation.mode
    if decision.kind == "embedding":
        return "embedding_dequantized", None
    if not w.symmetric:
        return None, "asymmetric weights (XNNPACK weight formats have no zero points)"
    if act is ActivationMode.NONE:
        return None, ("weight-only linear: executorch 1.5.1's XnnpackPartitioner delegates it but computes "
                      "wrong results (no XNNPACK weight-only GEMM); use dynamic int8 activations")
    if act is ActivationMode.STATIC_INT8:
        return None, "static int8 activations are not implemented for ExecuTorch (needs the PT2E quantizer flow)"
    in_features = decision.shape[1]
    if w.bits == 8:
        if w.group_size is not None and w.group_size < in_features:
            return None, "int8 group-wise weights (XNNPACK group-wise quantization is 4-bit only)"
        return "8da8w", None
    width = w.group_size or in_features
    if width % XNNPACK_GROUP_MULTIPLE:
        return None, f"int4 group size {width} is not a multiple of {XNNPACK_GROUP_MULTIPLE} (XNNPACK qb4w)"
    return "8da4w", None


def plan_problems(plan, spec: ModelSpec, options: ExecuTorchOptions) -> list[Unsupported]:
    out: list[Unsupported] = []
    names = plan.quantized_names()
    if names and options.precision is not EtPrecision.FP32:
        out.append(Unsupported(f"quantized plan with precision {options.precision.value}",
                               "XNNPACK dynamic-quant GEMMs in executorch 1.5.1 take fp32 activations; use fp32"))
    for name in names:
        mode, reason = _mode(plan.decisions[name])
        if mode is None:
            out.append(Unsupported(f"{name} ({plan.decisions[name].weight.label}, "
                                   f"{plan.decisions[name].activation.label})", reason))
    return out


def capabilities(options: ExecuTorchOptions | None = None):
    """What a QuantPlan may ask of this target (``QuantPlan.validate_against``, before calibration).
    Finer limits (no weight-only linears, int8 only per-channel, int4 groups of 32k) are in
    ``plan_problems``, which ``supports()`` runs on the same uncalibrated plan."""
    from slmpack.calibration.plan import TargetQuantCapabilities
    from slmpack.calibration.schemes import ActivationMode

    return TargetQuantCapabilities(
        name="executorch", weight_bits=frozenset({4, 8}),
        group_sizes=frozenset({None, 32, 64, 128, 256, 512, 1024}), asymmetric_weights=False,
        activation_modes=frozenset({ActivationMode.NONE, ActivationMode.DYNAMIC_INT8}),
        embedding_bits=frozenset({4, 8}))


def encodings(plan) -> dict[str, str]:
    return {n: _mode(plan.decisions[n])[0] for n in plan.quantized_names()}


def _intx_weight(qw, activation_dynamic: bool) -> torch.Tensor:
    from torchao.quantization.quantize_.workflows.intx.intx_unpacked_to_int8_tensor import (
        IntxUnpackedToInt8Tensor, IntxUnpackedToInt8TensorActivationQuantization)

    rows, cols = qw.q.shape
    width = qw.group_size or cols
    scale = qw.scale.to(torch.float32).reshape(rows, cols // width).contiguous()
    return IntxUnpackedToInt8Tensor(
        qdata=qw.q.to(torch.int8).contiguous(), scale=scale, zero_point=torch.zeros_like(scale, dtype=torch.int8),
        target_dtype=getattr(torch, f"int{qw.bits}"), block_size=(1, width), dtype=torch.float32,
        activation_quantization=(IntxUnpackedToInt8TensorActivationQuantization.INT8_ASYM_PER_TOKEN
                                 if activation_dynamic else None))


def apply_plan(ref: nn.Module, plan, options: ExecuTorchOptions) -> int:
    """Write the plan into ``ref`` (a private copy): float overrides, quantized Linear weights,
    dequantized embeddings. Returns the number of quantized Linear weights."""
    from slmpack.calibration.schemes import ActivationMode

    if not plan.is_calibrated:
        raise BadInputError("the quantization plan has decisions but no integer weights (not calibrated)",
                            "E_QUANT_PLAN_UNCALIBRATED")
    params = dict(ref.named_parameters(remove_duplicate=False))
    with torch.no_grad():
        for name, value in plan.float_overrides.items():
            params[name].copy_(value.to(params[name].dtype))
    count = 0
    for name in plan.quantized_names():
        d = plan.decisions[name]
        module = ref.get_submodule(name.rsplit(".", 1)[0])
        if d.kind == "embedding":
            module.weight = nn.Parameter(plan.dequantized(name).to(module.weight.dtype), requires_grad=False)
            continue
        qw = plan.weights[plan.owner(name)]
        dynamic = d.activation.mode is ActivationMode.DYNAMIC_INT8
        module.weight = nn.Parameter(_intx_weight(qw, dynamic), requires_grad=False)
        count += 1
    return count
