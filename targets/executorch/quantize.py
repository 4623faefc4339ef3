"""Encode a QuantPlan's integer weights the way XNNPACK executes them.

Each quantized Linear weight becomes a torchao ``IntxUnpackedToInt8Tensor`` built directly from
the plan's numbers (int8 storage, int4 unpacked in [-8, 7], float32 scales ``[out, n_groups]``,
``block_size = (1, group_size or in_features)``): no re-quantization, the target packs exactly the
plan's integers. ``torch.export`` turns it into ``dequantize_affine(q, scale)`` (+ the per-token
``choose_qparams/quantize/dequantize`` of the activation for dynamic int8), the pattern
XnnpackPartitioner fuses into one quantized GEMM.

What XNNPACK (executorch 1.5.1) runs, hence what ``plan_problems`` accepts:

* Linear, float32 activations x int8 per-channel weights, weight-only (``int8_weight_only``,
  XNNPACK's f32-qc8w fully-connected: ``sum_k x_k q_jk`` times the fp32 channel scale, so the
  output equals ``x @ (q * scale).T`` to float rounding; measured max relative error 2e-7 on a
  64->32 linear). The int8 integers and fp32 scales are stored as-is (4x smaller than fp32), and
  the GEMM reads int8 weights directly (no dequantized copy at run time). Stock
  ``XnnpackPartitioner`` cannot do this, see ``partition.py``: we replace its LinearConfig.
* Linear, dynamic int8 per-token activations x int8 per-channel weights   (qd8-f32-qc8w)
* Linear, dynamic int8 per-token activations x int4 group-wise weights, group a multiple of 32
  (8da4w, qd8-f32-qb4w). XNNPACK keeps group-wise scales in bf16
  (``operators/node_visitor.py: get_quant_params``), so the executed scales are the plan's
  float32 scales rounded to bf16 (relative change <= 2^-9): declared in ``executed_quant``, and
  the fake-quant reference dequantizes those weights with the bf16-rounded scales.
* Embeddings of any plan scheme (``embedding_int8``): the plan's integers (int8; int4 unpacked,
  one per byte) and fp32 scales (and zero points) are program constants; the forward gathers the
  rows of the integers and of the scales (portable ``aten.index.Tensor``), converts to fp32 and
  multiplies (``(q - zp) * scale``, the plan's own dequantization, bit-identical). Costs a few
  portable ops per step on [tokens, hidden] values, nothing per vocabulary row.

Why the stock partitioner computes weight-only linears wrongly (executorch 1.5.1,
``backends/xnnpack/partition/config/gemm_configs.py``): ``GEMMConfig._detect_precision`` calls a
linear with a dequantized weight and a float activation STATIC_QUANT, whose ``_get_act_deps``
then requires a dequantized activation, so LinearConfig rejects the node and ``aten.linear``
is decomposed into ``permute_copy + mm``. ``AddmmConfig.get_deps_from_src_partition`` (used by
MMConfig) maps the mm's weight back through the nn.Linear source partition to the *int8 qdata
parameter*, classifies the GEMM as FP32, and greedily takes the whole source partition,
``dequantize_affine`` included; ``OpDequantizeAffine.define_node``
(``operators/op_dynamic_dequantize_ops.py``) skips a per-channel weight dequantize, expecting
the GEMM to attach its quant params, but the FP32 mm path never does. XNNPACK multiplies by the
raw integers: the output is ``x @ q.T`` with the scales dropped (64->32 linear: max error 1.69e3
against eager, equal to ``x @ q.T`` to 1e-4).

Refused before any slow work (each with the reason):
* int4 weight-only Linear (float activations): XNNPACK's fully-connected has no fp32-activation
  kernel for block-wise int4 weights (qbint4 only with qd8/qdu8/qp8 inputs, XNNPACK
  ``subgraph/fully-connected.c``), and fp32 x per-channel int4 (f32-qc4w) fails
  ``XNNCompiler::compileModel`` with ``xnn_status_invalid_parameter`` in executorch 1.5.1.
  Use 8da4w (dynamic int8 activations).
* asymmetric weights: XNNPACK's qc8w/qc4w/qb4w weight formats carry scales only, no zero points.
* int8 group-wise weights: XNNPACK group-wise quantization is 4-bit only.
* static int8 activations: needs the PT2E quantizer flow (observers folded into q/dq pairs), not
  implemented for this target yet.
* quantized plans with fp16/bf16 programs: the quantized GEMMs here take fp32 activations.
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
        return "embedding_int8", None
    if not w.symmetric:
        return None, "asymmetric weights (XNNPACK weight formats have no zero points)"
    if act is ActivationMode.STATIC_INT8:
        return None, "static int8 activations are not implemented for ExecuTorch (needs the PT2E quantizer flow)"
    in_features = decision.shape[1]
    weight_only = act is ActivationMode.NONE
    if w.bits == 8:
        if w.group_size is not None and w.group_size < in_features:
            return None, "int8 group-wise weights (XNNPACK group-wise quantization is 4-bit only)"
        return ("int8_weight_only" if weight_only else "8da8w"), None
    if weight_only:
        return None, ("int4 weight-only linear: XNNPACK has no fp32-activation GEMM for int4 weights "
                      "(block-wise int4 runs only with dynamically quantized activations; per-channel "
                      "f32-qc4w fails to compile in executorch 1.5.1); use 8da4w")
    width = w.group_size or in_features
    if width % XNNPACK_GROUP_MULTIPLE:
        return None, f"int4 group size {width} is not a multiple of {XNNPACK_GROUP_MULTIPLE} (XNNPACK qb4w)"
    return "8da4w", None


def plan_problems(plan, spec: ModelSpec, options: ExecuTorchOptions) -> list[Unsupported]:
    out: list[Unsupported] = []
    names = plan.quantized_names()
    if names and options.precision is not EtPrecision.FP32:
        out.append(Unsupported(f"quantized plan with precision {options.precision.value}",
                               "XNNPACK quantized GEMMs (f32-qc8w, qd8-f32-*) in executorch 1.5.1 take fp32 "
                               "activations; use fp32"))
    for name in names:
        mode, reason = _mode(plan.decisions[name])
        if mode is None:
            out.append(Unsupported(f"{name} ({plan.decisions[name].weight.label}, "
                                   f"{plan.decisions[name].activation.label})", reason))
    return out


def capabilities(options: ExecuTorchOptions | None = None):
    """What a QuantPlan may ask of this target (``QuantPlan.validate_against``, before calibration).
    Finer limits (weight-only only for int8 per-channel, int8 only per-channel, int4 groups of 32k) are in
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


EXACT_ENCODINGS = frozenset({"int8_weight_only", "embedding_int8"})  # fp32 math on the plan's values


def executed_quant(plan):
    """What XNNPACK runs where it differs from the plan: every dynamic int8 input is quantized per
    token *asymmetrically* (qd8: ``range / 255`` and a zero point; torchao's INT8_ASYM_PER_TOKEN,
    the pattern the partitioner fuses), whatever the plan's activation symmetry; group-wise int4
    weights (qb4w) run with their scales in bf16 (``node_visitor.get_quant_params``)."""
    from slmpack.calibration.schemes import ActivationMode
    from slmpack.targets.base import DynamicActivation, ExecutedQuant

    acts, bf16 = {}, set()
    for name, enc in encodings(plan).items():
        d = plan.decisions[name]
        if d.activation.mode is ActivationMode.DYNAMIC_INT8:
            acts[name] = DynamicActivation(symmetric=False)
        if enc == "8da4w" and d.weight.group_size is not None and d.weight.group_size < d.shape[1]:
            bf16.add(name)
    return ExecutedQuant(acts, frozenset(bf16))


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


class QuantizedEmbedding(nn.Module):
    """Embedding lookup on the plan's integers: ``(q[ids] - zp[ids]) * scale[ids]`` per group, in
    fp32 exactly as ``calibration.rtn.dequantize`` computes it (the table is never dequantized)."""

    def __init__(self, qw, dtype: torch.dtype = torch.float32):
        super().__init__()
        rows, cols = qw.q.shape
        self.width = qw.group_size or cols
        self.cols, self.dtype = cols, dtype
        self.register_buffer("q", qw.q.to(torch.int8).contiguous())
        self.register_buffer("scale", qw.scale.to(torch.float32).reshape(rows, cols // self.width).contiguous())
        self.register_buffer("zero_point", None if qw.zero_point is None
                             else qw.zero_point.to(torch.int8).reshape(rows, cols // self.width).contiguous())

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        lead = ids.shape
        q = self.q[ids].to(torch.float32).reshape(*lead, self.cols // self.width, self.width)
        if self.zero_point is not None:
            q = q - self.zero_point[ids].to(torch.float32).unsqueeze(-1)
        out = (q * self.scale[ids].unsqueeze(-1)).reshape(*lead, self.cols)
        return out if self.dtype == torch.float32 else out.to(self.dtype)


class BiasAfterLinear(nn.Module):
    """``linear(x, W) + b`` as two nodes, for int8 weight-only linears with a bias (Qwen2's q/k/v):
    XNNPACK's LinearVisitor (executorch 1.5.1, ``operators/op_linear.py``) quantizes a bias
    together with a quantized weight and then requires a quantized input ("Weight and Input should
    both be quantized"); with the bias added after the GEMM, the GEMM is the f32-qc8w kind we claim
    (``partitioner_configs``) and the add is an ordinary fp32 add."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = nn.Parameter(bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight) + self.bias


def apply_plan(ref: nn.Module, plan, options: ExecuTorchOptions) -> int:
    """Write the plan into ``ref`` (a private copy): float overrides, quantized Linear weights,
    embeddings swapped for ``QuantizedEmbedding``. Returns the number of quantized Linear weights."""
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
            parent, _, attr = name.rsplit(".", 1)[0].rpartition(".")
            setattr(ref.get_submodule(parent), attr, QuantizedEmbedding(plan.weights[plan.owner(name)],
                                                                        module.weight.dtype))
            continue
        qw = plan.weights[plan.owner(name)]
        dynamic = d.activation.mode is ActivationMode.DYNAMIC_INT8
        if module.bias is not None and not dynamic:
            parent, _, attr = name.rsplit(".", 1)[0].rpartition(".")
            setattr(ref.get_submodule(parent), attr, BiasAfterLinear(_intx_weight(qw, False), module.bias))
        else:
            module.weight = nn.Parameter(_intx_weight(qw, dynamic), requires_grad=False)
        count += 1
    return count
