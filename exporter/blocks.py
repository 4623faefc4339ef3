"""The reference decoder's building blocks, each delta of ``Deltas`` implemented once.

Module and parameter names are the Hugging Face Llama names whatever the family (``q_proj``,
``o_proj``, ``gate_proj``/``up_proj``/``down_proj``, ``input_layernorm`` ...); ``weight_map.py``
renames other checkpoints' tensors to them. With ``Deltas()`` every block computes exactly the
Llama graph it always did (no extra ops), so Llama/Mistral/Qwen2 exports are unchanged.
"""
from __future__ import annotations

import torch
from torch import nn

from slmpack.exporter.deltas import Activation, NormKind, Positions, QKNorm
from slmpack.exporter.spec import ModelSpec


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def make_norm(spec: ModelSpec, dim: int) -> nn.Module:
    """RMSNorm, or LayerNorm with bias (Phi-2, GPT-2). Gemma's (1 + w) offset is folded into w at load."""
    if spec.deltas.norm is NormKind.LAYER:
        return nn.LayerNorm(dim, eps=spec.rms_norm_eps)
    return RMSNorm(dim, spec.rms_norm_eps)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rotary_dim: int | None) -> torch.Tensor:
    """Rotate the first ``rotary_dim`` channels of each head (all of them when None)."""
    if rotary_dim is None:
        return x * cos + rotate_half(x) * sin
    rot, rest = x[..., :rotary_dim], x[..., rotary_dim:]
    return torch.cat([rot * cos + rotate_half(rot) * sin, rest], dim=-1)


def soft_cap(x: torch.Tensor, cap: float | None) -> torch.Tensor:
    return x if cap is None else torch.tanh(x / cap) * cap


ACTIVATIONS = {Activation.SILU: nn.functional.silu,
        Activation.GELU_TANH: lambda x: nn.functional.gelu(x, approximate="tanh"),
        Activation.GELU: nn.functional.gelu}


class MLP(nn.Module):
    """Gated (down(act(gate(x)) * up(x))) or plain (down(act(up(x))): Phi-2 fc1/fc2, GPT-2 c_fc/c_proj);
    ``size`` overrides the intermediate size (a MoE's shared expert)."""

    def __init__(self, spec: ModelSpec, size: int | None = None):
        super().__init__()
        d, f, b = spec.hidden_size, size or spec.intermediate_size, spec.mlp_bias
        self.gated = spec.deltas.gated_mlp
        self.act = ACTIVATIONS[spec.deltas.activation]
        if self.gated:
            self.gate_proj = nn.Linear(d, f, bias=b)
        self.up_proj = nn.Linear(d, f, bias=b)
        self.down_proj = nn.Linear(f, d, bias=b)

    def forward(self, x):
        if self.gated:
            return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))
        return self.down_proj(self.act(self.up_proj(x)))


class Attention(nn.Module):
    def __init__(self, spec: ModelSpec, layer: int):
        super().__init__()
        self.layer, self.h, self.kv, self.hd = layer, spec.num_heads, spec.num_kv_heads, spec.head_dim
        dl = spec.deltas
        d, b = spec.hidden_size, spec.attention_bias
        self.q_proj = nn.Linear(d, self.h * self.hd, bias=b)
        self.k_proj = nn.Linear(d, self.kv * self.hd, bias=b)
        self.v_proj = nn.Linear(d, self.kv * self.hd, bias=b)
        self.o_proj = nn.Linear(self.h * self.hd, d, bias=dl.o_bias)
        self.scale = dl.attention_scale if dl.attention_scale is not None else self.hd ** -0.5
        self.softcap = dl.attn_softcap
        self.rotary_dim = dl.rotary_dim
        self.use_rope = spec.layer(layer).rope and dl.positions is Positions.ROPE
        self.qk_norm = dl.qk_norm
        if dl.qk_norm is QKNorm.PER_HEAD:
            self.q_norm, self.k_norm = RMSNorm(self.hd, spec.rms_norm_eps), RMSNorm(self.hd, spec.rms_norm_eps)
        elif dl.qk_norm is QKNorm.FULL_WIDTH:
            self.q_norm = RMSNorm(self.h * self.hd, spec.rms_norm_eps)
            self.k_norm = RMSNorm(self.kv * self.hd, spec.rms_norm_eps)
        elif dl.qk_norm is QKNorm.LAYER_PER_HEAD:
            self.q_norm = nn.LayerNorm(self.hd, eps=spec.rms_norm_eps)
            self.k_norm = nn.LayerNorm(self.hd, eps=spec.rms_norm_eps)

    def project(self, x):
        """q [B,H,S,D], k/v [B,KV,S,D] before RoPE (q/k norms applied where the family puts them)."""
        q, k, v = project_heads(self, x)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

    def forward(self, x, cos, sin, mask, cache):
        bsz, s, _ = x.shape
        q, k, v = self.project(x)
        if self.use_rope:
            q = apply_rope(q, cos, sin, self.rotary_dim)
            k = apply_rope(k, cos, sin, self.rotary_dim)
        k_all, v_all = cache.update(self.layer, k, v)
        groups = self.h // self.kv
        if groups > 1:  # GQA: share each kv head across its query group
            t = k_all.shape[2]
            k_all = k_all[:, :, None].expand(bsz, self.kv, groups, t, self.hd).reshape(bsz, self.h, t, self.hd)
            v_all = v_all[:, :, None].expand(bsz, self.kv, groups, t, self.hd).reshape(bsz, self.h, t, self.hd)
        scores = soft_cap(torch.matmul(q, k_all.transpose(2, 3)) * self.scale, self.softcap) + mask
        probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
        out = torch.matmul(probs, v_all).transpose(1, 2).reshape(bsz, s, self.h * self.hd)
        return self.o_proj(out)


def project_heads(attn, x):
    """q [B,S,H,D], k/v [B,S,KV,D] (sequence-major) before RoPE, q/k norms where the family puts
    them; ``attn`` is an Attention or a module holding its projections and norms (custom SDPA)."""
    bsz, s, _ = x.shape
    q, k, v = attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)
    if attn.qk_norm is QKNorm.FULL_WIDTH:
        q, k = attn.q_norm(q), attn.k_norm(k)
    q, k = q.view(bsz, s, attn.h, attn.hd), k.view(bsz, s, attn.kv, attn.hd)
    if attn.qk_norm in (QKNorm.PER_HEAD, QKNorm.LAYER_PER_HEAD):
        q, k = attn.q_norm(q), attn.k_norm(k)
    return q, k, v.view(bsz, s, attn.kv, attn.hd)
