"""The sparse mixture-of-experts MLP of ``MoESpec``, written for export: static shapes, no
data-dependent control flow, the same graph on every target.

Routing is exactly transformers' (softmax of the router logits in fp32, ``torch.topk``, optional
renormalization over the k), turned into a dense [tokens, experts] weight matrix that is zero off
each token's top-k. Every expert then runs on every token as one batched matmul over stacked
[E, ...] weights, and the outputs are summed with those weights: the same number as the sparse
gather/scatter computation up to fp32 rounding (the zero-weighted experts add exact zeros).

Cost: the dense evaluation does ``num_experts / top_k`` times the MLP FLOPs of the sparse one
(4x for 8 experts top-2) and reads every expert's weights each step; memory is the checkpoint's
(all experts are resident either way). Router and expert weights are plain parameters, not
``nn.Linear``: quantization plans cover Linear/Embedding weights only, so they stay float (a
quantized router would flip discrete expert choices); a shared expert is an ordinary MLP and is
quantized like one. Discrete routing also makes a near tie between the k-th and (k+1)-th expert
sensitive to any rounding upstream (Core ML's fp16 KV state: ``tests/test_family_targets.py``).
"""
from __future__ import annotations

import torch
from torch import nn

from slmpack.exporter.blocks import ACTIVATIONS, MLP
from slmpack.exporter.deltas import MoESpec
from slmpack.exporter.spec import ModelSpec


class Router(nn.Module):
    """Router logits x @ weight.T ([E, hidden], the checkpoint's gate / router.layer)."""

    def __init__(self, experts: int, hidden: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(experts, hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(x, self.weight.t())


class Experts(nn.Module):
    """Every expert's gated MLP at once: gate/up [E, F, D], down [E, D, F]; x [N, D] -> [E, N, D]."""

    def __init__(self, moe: MoESpec, hidden: int, act):
        super().__init__()
        e, f = moe.num_experts, moe.expert_size
        self.gate_proj = nn.Parameter(torch.empty(e, f, hidden))
        self.up_proj = nn.Parameter(torch.empty(e, f, hidden))
        self.down_proj = nn.Parameter(torch.empty(e, hidden, f))
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[None]                                                     # [1, N, D] against [E, D, F]
        h = self.act(torch.matmul(x, self.gate_proj.transpose(1, 2))) * torch.matmul(x, self.up_proj.transpose(1, 2))
        return torch.matmul(h, self.down_proj.transpose(1, 2))


def routing_weights(logits: torch.Tensor, top_k: int, renormalize: bool) -> torch.Tensor:
    """[N, E] router logits -> [N, E] weights: the top-k softmax probabilities (renormalized over
    the k if asked), exact zeros elsewhere. The one-hot is an ``==`` against arange (no scatter)."""
    probs = torch.softmax(logits.float(), dim=-1)
    top, idx = torch.topk(probs, top_k, dim=-1)
    if renormalize:
        top = top / top.sum(dim=-1, keepdim=True)
    onehot = (idx[..., None] == torch.arange(probs.shape[-1], device=probs.device)).to(probs.dtype)  # [N, k, E]
    return (onehot * top[..., None]).sum(dim=-2)


class SparseMoE(nn.Module):
    """``mlp`` of a MoE layer: x [B, S, D] -> sum over experts of weight x expert(x)
    (+ sigmoid(x . w) x shared_expert(x) when the family has one)."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        moe, hidden = spec.deltas.moe, spec.hidden_size
        self.top_k, self.renormalize = moe.top_k, moe.norm_topk_prob
        self.router = Router(moe.num_experts, hidden)
        self.experts = Experts(moe, hidden, ACTIVATIONS[spec.deltas.activation])
        self.shared = moe.shared_expert_size > 0
        if self.shared:
            self.shared_expert = MLP(spec, moe.shared_expert_size)
            self.shared_expert_gate = Router(1, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        w = routing_weights(self.router(flat), self.top_k, self.renormalize).to(x.dtype)   # [N, E]
        out = (self.experts(flat) * w.t()[:, :, None]).sum(dim=0).reshape(shape)
        if self.shared:   # on x [B, S, D]: its Linears stay MatMuls (a 2-D Linear exports as Gemm)
            out = out + torch.sigmoid(self.shared_expert_gate(x)) * self.shared_expert(x)
        return out
