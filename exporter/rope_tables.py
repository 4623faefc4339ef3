"""RoPE cos / sin tables of a ModelSpec, computed once at build time (fp32, attention scaling folded in).

* ``rope_cos`` / ``rope_sin``            [max_context, rotary_dim]: the global table (LongRoPE: short factors)
* ``rope_cos_long`` / ``rope_sin_long``  LongRoPE's long-factor table (selected per call, see reference.py)
* ``rope_cos_local`` / ``rope_sin_local`` Gemma 3's sliding layers' own base

``rotary_dim`` is ``head_dim`` unless the family rotates only part of each head (Phi-2, Phi-4-mini).
"""
from __future__ import annotations

import torch

from slmpack.exporter.spec import ModelSpec, RopeSpec


def _table(inv: list[float] | torch.Tensor, scale: float, max_context: int) -> tuple[torch.Tensor, torch.Tensor]:
    inv_t = torch.as_tensor(inv, dtype=torch.float32)
    freqs = torch.arange(max_context, dtype=torch.float32)[:, None] * inv_t[None, :]
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos() * scale, emb.sin() * scale


def _longrope_inv(theta: float, dim: int, factors) -> torch.Tensor:
    """As transformers computes it: 1 / (factor_i * theta ** (2i / dim)), in fp32."""
    shape = torch.arange(0, dim, 2, dtype=torch.int64).float() / dim
    return 1.0 / (torch.tensor(factors, dtype=torch.float32) * theta ** shape)


def rope_tables(spec: ModelSpec, max_context: int) -> dict[str, torch.Tensor]:
    dim, dl = spec.rotary_dim, spec.deltas
    out: dict[str, torch.Tensor] = {}
    if dl.longrope is not None:
        lr = dl.longrope
        out["rope_cos"], out["rope_sin"] = _table(_longrope_inv(spec.rope.theta, dim, lr.short_factor),
                                                  lr.attention_factor, max_context)
        out["rope_cos_long"], out["rope_sin_long"] = _table(_longrope_inv(spec.rope.theta, dim, lr.long_factor),
                                                            lr.attention_factor, max_context)
    else:
        inv, scale = spec.rope.inv_freq_and_scale(dim, spec.max_position_embeddings)
        out["rope_cos"], out["rope_sin"] = _table(inv, scale, max_context)
    if dl.local_rope_theta is not None:
        inv, scale = RopeSpec(theta=dl.local_rope_theta).inv_freq_and_scale(dim, spec.max_position_embeddings)
        out["rope_cos_local"], out["rope_sin_local"] = _table(inv, scale, max_context)
    return out
