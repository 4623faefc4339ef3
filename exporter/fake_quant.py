"""The plan's fake-quant reference: what a quantized artifact *should* compute.

``fake_quant_reference(ref, plan)`` is a copy of the fp32 reference whose quantized weights are
replaced by the plan's dequantized values and whose fold overrides (AWQ/SmoothQuant RMSNorm
weights, biases) are applied. It is the module traced for quantized exports, so every target
starts from a graph that already computes the plan's weights; a target then swaps each float
weight constant for its native integer encoding of the *same numbers*.

``activation_fake_quant(model, plan, executed)`` additionally quantizes linear inputs in eager
mode (forward pre-hooks), for the validation reference only (never traced):

* static int8: per-tensor with the plan's scale / zero point (``observers.fake_quant_activation``);
* dynamic int8: as the target declares its runtime does it (``executed.activations``,
  ``Target.executed_quant``), else as the plan's scheme says, per token: symmetric
  (``absmax / 127``), per token or per (token, block of input columns) (ONNX Runtime's
  ``MatMulNBits`` with ``accuracy_level=4`` quantizes A per block of the weight's block size), or
  asymmetric per token (``range / 255`` and a zero point: XNNPACK's qd8).

``bf16_scale_weights(model, plan, names)`` re-dequantizes the named weights with their group
scales rounded to bf16, where the runtime stores them so (XNNPACK qb4w).
"""
from __future__ import annotations

import contextlib

import torch

from slmpack.exporter.reference import ReferenceModel, assemble_reference


def fake_quant_reference(ref: ReferenceModel, plan) -> ReferenceModel:
    """A new ReferenceModel (ties kept) holding the plan's dequantized weights. Tensors the plan
    does not change are *shared* with ``ref`` (nothing in the pipeline writes parameters in place;
    targets that rewrite weights work on their own copy), so the only new memory is the
    dequantized weights themselves — not a deep copy of the model plus a state dict."""
    spec = ref.spec
    sd = ref.state_dict()
    if spec.tie_word_embeddings:
        sd.pop("lm_head.weight", None)        # one dequantized table for the tied pair
    return assemble_reference(spec, ref.max_context, plan.fake_quant_state_dict(sd),
                              {n: b for n, b in ref.named_buffers() if n.startswith("rope_")})


def _dynamic_symmetric(x: torch.Tensor, block: int | None) -> torch.Tensor:
    shape = x.shape
    k = shape[-1]
    width = k if not block or k % block else block
    xb = x.reshape(*shape[:-1], k // width, width)
    scale = xb.abs().amax(dim=-1, keepdim=True) / 127.0
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.clamp(torch.round(xb / scale), -127, 127)
    return (q * scale).reshape(shape)


def _dynamic_asymmetric(x: torch.Tensor) -> torch.Tensor:
    lo = x.amin(dim=-1, keepdim=True).clamp(max=0)
    hi = x.amax(dim=-1, keepdim=True).clamp(min=0)
    scale = (hi - lo) / 255.0
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    zp = torch.round(-lo / scale) - 128
    q = torch.clamp(torch.round(x / scale) + zp, -128, 127)
    return (q - zp) * scale


def install_activation_fake_quant(model: torch.nn.Module, plan, executed=None) -> list:
    """Fake-quantize ``model``'s linear inputs as ``plan`` says, dynamic int8 as ``executed``
    (a ``targets.base.ExecutedQuant``) declares the runtime does it (forward pre-hooks; returns the
    handles)."""
    from slmpack.calibration.observers import fake_quant_activation
    from slmpack.calibration.schemes import ActivationMode

    declared = dict(executed.activations) if executed is not None else {}
    handles = []
    for name, d in plan.decisions.items():
        mode = d.activation.mode
        if mode is ActivationMode.NONE or d.kind != "linear":
            continue
        module = model.get_submodule(name[: -len(".weight")])
        if mode is ActivationMode.STATIC_INT8:
            a = plan.activations[name]
            hook = (lambda s, z: lambda _m, args: (fake_quant_activation(args[0], s, z), *args[1:]))(
                a.scale, a.zero_point)
        elif (declared[name].symmetric if name in declared else d.activation.symmetric):
            block = declared[name].block if name in declared else None
            hook = (lambda b: lambda _m, args: (_dynamic_symmetric(args[0], b), *args[1:]))(block)
        else:
            hook = lambda _m, args: (_dynamic_asymmetric(args[0]), *args[1:])  # noqa: E731
        handles.append(module.register_forward_pre_hook(hook))
    return handles


def bf16_scale_weights(model: torch.nn.Module, plan, names) -> None:
    """Replace each named weight of ``model`` (a fake-quant reference: its own dequantized tensor)
    with the plan's integers dequantized by bf16-rounded group scales."""
    from slmpack.calibration.rtn import dequantize

    for name in sorted(names):
        qw = plan.weights[plan.owner(name)]
        module = model.get_submodule(name[: -len(".weight")])
        w = dequantize(qw.q, qw.scale.to(torch.bfloat16).to(torch.float32), qw.zero_point, qw.group_size)
        module.weight = torch.nn.Parameter(w.to(module.weight.dtype), requires_grad=False)


@contextlib.contextmanager
def activation_fake_quant(model: torch.nn.Module, plan, executed=None):
    """``install_activation_fake_quant`` for the duration of a ``with`` block."""
    handles = install_activation_fake_quant(model, plan, executed)
    try:
        yield model
    finally:
        for h in handles:
            h.remove()


def has_activation_quant(plan) -> bool:
    from slmpack.calibration.schemes import ActivationMode

    return any(d.activation.mode is not ActivationMode.NONE for d in plan.decisions.values())
