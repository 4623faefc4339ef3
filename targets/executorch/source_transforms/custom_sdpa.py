"""Replace the written-out attention by ExecuTorch's LLM custom ops.

``llama::update_cache`` writes the new keys/values into ``[B, T, kv_heads, head_dim]`` caches in
place, and ``llama::custom_sdpa`` attends causally from ``start_pos`` over only the first
``start_pos + S`` cache rows (GQA handled inside the kernel, so no expanded K/V copies, and stale
rows past the current position are never read). The projections and RoPE stay ordinary ops that
XNNPACK delegates. See ``executorch/examples/models/llama/source_transformation/sdpa.py``.

A sliding window shorter than the cache needs an explicit mask: the kernel then takes the
reference mask (``is_causal=False``) instead of the causal ``start_pos`` path (the step passes each
layer its own mask, so per-layer windows work). q/k norms, partial rotary and NoPE layers are
applied as the reference does; attention soft-capping has no place in the kernel, so a spec with
it keeps the written-out attention (``can_express``).
"""
from __future__ import annotations

import torch
from torch import nn

from slmpack.exporter.blocks import apply_rope, project_heads
from slmpack.exporter.deltas import QKNorm
from slmpack.exporter.reference import Attention, rotate_half


def can_express(spec) -> str | None:
    """None if custom_sdpa computes this spec's attention, else the delta it cannot express."""
    if spec.deltas.attn_softcap is not None:
        return "attn_softcap (llama::custom_sdpa has no soft-capping)"
    return None


def load_custom_ops() -> None:
    """Register ``torch.ops.llama.*`` (AOT library shipped in the executorch wheel)."""
    from executorch.extension.llm.custom_ops import custom_ops  # noqa: F401


class CustomOpCache:
    """Cache strategy for ``ReferenceModel.step``: buffers ``[1, T, kv, hd]`` updated by update_cache."""

    def __init__(self, k_bufs, v_bufs, start_pos):
        self.k_bufs, self.v_bufs, self.start_pos = k_bufs, v_bufs, start_pos

    def key_positions(self, seq_len: int, device=None) -> torch.Tensor:
        return torch.arange(self.k_bufs[0].shape[1], device=device)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """k, v: [B, S, kv, hd] (sequence-major, the layout the custom ops use)."""
        kc, vc = self.k_bufs[layer], self.v_bufs[layer]
        torch.ops.llama.update_cache(k.to(kc.dtype), kc, self.start_pos)
        torch.ops.llama.update_cache(v.to(vc.dtype), vc, self.start_pos)
        return kc, vc


class CustomSdpaAttention(nn.Module):
    """Same projections and RoPE as ``reference.Attention``; attention by ``llama::custom_sdpa``."""

    def __init__(self, attn: Attention, use_mask: bool):
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj
        self.layer, self.h, self.kv, self.hd, self.scale = attn.layer, attn.h, attn.kv, attn.hd, attn.scale
        self.use_mask = use_mask
        self.qk_norm, self.rotary_dim, self.use_rope = attn.qk_norm, attn.rotary_dim, attn.use_rope
        if attn.qk_norm is not QKNorm.NONE:
            self.q_norm, self.k_norm = attn.q_norm, attn.k_norm

    def forward(self, x, cos, sin, mask, cache: CustomOpCache):
        bsz, s, _ = x.shape
        q, k, v = project_heads(self, x)                               # [B, S, H, hd]
        cos, sin = cos.transpose(1, 2), sin.transpose(1, 2)          # [1, S, 1, hd]
        if self.use_rope and self.rotary_dim is None:
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
        elif self.use_rope:
            q, k = apply_rope(q, cos, sin, self.rotary_dim), apply_rope(k, cos, sin, self.rotary_dim)
        k_all, v_all = cache.update(self.layer, k, v)
        q = q.to(k_all.dtype)                                          # the kernel runs fp32/bf16
        if self.use_mask:
            out = torch.ops.llama.custom_sdpa(q, k_all, v_all, 0, mask.to(q.dtype), 0.0, False, self.scale)
        else:
            out = torch.ops.llama.custom_sdpa(q, k_all, v_all, cache.start_pos, None, 0.0, True, self.scale)
        return self.o_proj(out.to(x.dtype).reshape(bsz, s, self.h * self.hd))


def replace_attention(module: nn.Module, use_mask: bool = False) -> int:
    load_custom_ops()
    count = 0
    for name, child in list(module.named_children()):
        if isinstance(child, Attention):
            setattr(module, name, CustomSdpaAttention(child, use_mask))
            count += 1
        else:
            count += replace_attention(child, use_mask)
    return count
