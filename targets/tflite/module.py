"""The reference decoder seen the way LiteRT / LiteRT-LM want it (one module, one signature each).

``LiteRTDecoder(ref)`` shares the reference module's parameters and computes the same function
as ``ReferenceModel.step`` with a ``StaticIOCache``, with three LiteRT-specific choices:

* I/O follows litert-torch's generative naming, which LiteRT-LM's executor recognises:
  ``tokens`` int32 [1, S], ``input_pos`` int32 [S], ``kv_cache_k_<i>`` / ``kv_cache_v_<i>``
  float [1, num_kv_heads, max_context, head_dim] -> ``logits`` float [1, S, V] and the updated
  ``kv_cache_*``. That cache shape is the spine's IO_STATIC layout and LiteRT-LM's: its executor
  reads the context length from dimension 2 of the K cache (litert-torch's older [1, T, H, D]
  layout makes it see a context of H tokens). ``v_transposed=True`` stores V as
  [1, num_kv_heads, head_dim, max_context] like litert-torch's ``export_hf`` (a GPU-oriented
  choice; LiteRT-LM on CPU runs either).
* The cache is written with ``dynamic_update_slice`` at ``input_pos[0]`` (a contiguous block of
  S rows, ``tfl.DYNAMIC_UPDATE_SLICE``), as litert-torch's own KV cache does. The write position
  of a row therefore depends only on ``input_pos[0]``, never on the (possibly padded) later
  entries of ``input_pos``.
* RMSNorm and attention are wrapped in litert-torch's composites (``odml.rms_norm``,
  ``odml.scaled_dot_product_attention``) when ``composites=True``; the math inside each
  composite is the same as the reference's (see ``tests/targets/test_tflite.py``).

The causal mask is computed in the graph from ``input_pos`` exactly as the reference does
(``key_pos <= q_pos``), so callers never pass a mask. Padded query rows (rows past the real
prompt in a fixed-length ``prefill_<S>`` signature) only write cache rows past the prompt; a
later step at position p writes row p before it attends to rows <= p, so no real query ever
reads a padded row.
"""
from __future__ import annotations

import torch
from torch import nn

from slmpack.exporter.reference import ReferenceModel, rotate_half


def cache_names(num_layers: int) -> list[str]:
    """Signature names of the cache tensors, in signature order (k0, v0, k1, v1, ...)."""
    return [f"kv_cache_{kv}_{i}" for i in range(num_layers) for kv in ("k", "v")]


def _rms_norm(norm, x: torch.Tensor, composites: bool) -> torch.Tensor:
    if composites:
        from litert_torch.generative.layers.normalization import rms_norm_with_hlfb

        return rms_norm_with_hlfb(x, norm.weight, norm.eps, torch.ones_like(norm.weight))
    return norm(x)


def _sdpa(q, k, v, mask, head_dim: int, scale: float, composites: bool) -> torch.Tensor:
    """q [B,S,H,D], k/v [B,T,KV,D], additive mask [1,1,S,T] -> [B,S,H,D]."""
    from litert_torch.generative.layers import scaled_dot_product_attention as sdpa

    fn = sdpa.scaled_dot_product_attention_with_hlfb if composites else sdpa.scaled_dot_product_attention
    return fn(q, k, v, head_dim, mask=mask, scale=scale)


def _update(cache: torch.Tensor, new: torch.Tensor, start: torch.Tensor, seq_dim: int) -> torch.Tensor:
    from litert_torch.generative.custom_ops.dynamic_update_slice import dynamic_update_slice

    zero = torch.zeros([], dtype=torch.int32)
    idx = [zero, zero, zero, zero]
    idx[seq_dim] = start
    return dynamic_update_slice(cache, new, idx)


class DusCache:
    """Cache strategy for ``ReferenceModel.step`` writing rows with ``dynamic_update_slice`` at
    ``input_pos[0]`` (the same writes as the composite path below), caches [1, KV, T, D]."""

    def __init__(self, kv_cache: dict, start: torch.Tensor, key_pos: torch.Tensor, v_transposed: bool):
        self.kv_cache, self.start, self.key_pos, self.v_transposed = kv_cache, start, key_pos, v_transposed
        self.out: dict[str, torch.Tensor] = {}

    def key_positions(self, seq_len: int, device=None) -> torch.Tensor:
        return self.key_pos

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        k_all = _update(self.kv_cache[f"k_{layer}"], k, self.start, 2)
        if self.v_transposed:
            v_all = _update(self.kv_cache[f"v_{layer}"], v.transpose(2, 3), self.start, 3)
            v_use = v_all.transpose(2, 3)
        else:
            v_all = v_use = _update(self.kv_cache[f"v_{layer}"], v, self.start, 2)
        self.out[f"k_{layer}"], self.out[f"v_{layer}"] = k_all, v_all
        return k_all, v_use


def uses_generic_path(spec) -> bool:
    """A checkpoint with any delta from Llama runs the reference's own ``step`` (every delta
    implemented once there), without litert-torch composites; Llama / Mistral / Qwen2 (no Deltas, no
    per-layer facts) keep the composite path exactly as before."""
    return bool(spec.deltas.used()) or bool(spec.layers)


class LiteRTDecoder(nn.Module):
    def __init__(self, ref: ReferenceModel, composites: bool = True, v_transposed: bool = False):
        super().__init__()
        self.ref = ref
        self.composites = composites
        self.v_transposed = v_transposed
        self.register_buffer("key_pos", torch.arange(ref.max_context, dtype=torch.int32), persistent=False)

    def forward(self, tokens: torch.Tensor, input_pos: torch.Tensor, kv_cache: dict[str, torch.Tensor]):
        ref, spec = self.ref, self.ref.spec
        if uses_generic_path(spec):
            start = input_pos[0].to(torch.int32).reshape([])
            cache = DusCache(kv_cache, start, self.key_pos, self.v_transposed)
            logits = ref.step(tokens, input_pos, cache)
            return {"logits": logits, "kv_cache": cache.out}
        bsz, s = tokens.shape
        h, kvh, hd = spec.num_heads, spec.num_kv_heads, spec.head_dim
        x = ref.model.embed_tokens(tokens)
        cos = ref.rope_cos[input_pos].to(x.dtype)[None, :, None, :]          # [1,S,1,D]
        sin = ref.rope_sin[input_pos].to(x.dtype)[None, :, None, :]
        allowed = self.key_pos[None, :] <= input_pos[:, None]                   # [S,T]
        if spec.sliding_window is not None and spec.sliding_window < ref.max_context:
            allowed = allowed & (self.key_pos[None, :] > input_pos[:, None] - spec.sliding_window)
        mask = torch.where(allowed, 0.0, float("-inf")).to(x.dtype)[None, None]
        start = input_pos[0].to(torch.int32).reshape([])
        out_cache: dict[str, torch.Tensor] = {}
        for i, layer in enumerate(ref.model.layers):
            attn = layer.self_attn
            hn = _rms_norm(layer.input_layernorm, x, self.composites)
            q = attn.q_proj(hn).view(bsz, s, h, hd)
            k = attn.k_proj(hn).view(bsz, s, kvh, hd)
            v = attn.v_proj(hn).view(bsz, s, kvh, hd)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            k_all = _update(kv_cache[f"k_{i}"], k.transpose(1, 2), start, 2)            # [1,KV,T,D]
            if self.v_transposed:
                v_all = _update(kv_cache[f"v_{i}"], v.permute(0, 2, 3, 1), start, 3)   # [1,KV,D,T]
                v_btnh = v_all.permute(0, 3, 1, 2)
            else:
                v_all = _update(kv_cache[f"v_{i}"], v.transpose(1, 2), start, 2)
                v_btnh = v_all.transpose(1, 2)
            out_cache[f"k_{i}"], out_cache[f"v_{i}"] = k_all, v_all
            y = _sdpa(q, k_all.transpose(1, 2), v_btnh, mask, hd, attn.scale, self.composites)
            x = x + attn.o_proj(y.reshape(bsz, s, h * hd))
            x = x + layer.mlp(_rms_norm(layer.post_attention_layernorm, x, self.composites))
        logits = ref.lm_head(_rms_norm(ref.model.norm, x, self.composites))
        return {"logits": logits, "kv_cache": out_cache}


def sample_inputs(ref: ReferenceModel, seq: int, v_transposed: bool = False) -> dict:
    """Sample kwargs of one signature with ``seq`` tokens (int32 token ids and positions)."""
    spec = ref.spec
    k_shape = (1, spec.num_kv_heads, ref.max_context, spec.head_dim)
    v_shape = (1, spec.num_kv_heads, spec.head_dim, ref.max_context) if v_transposed else k_shape
    cache = {}
    for i in range(spec.num_layers):
        cache[f"k_{i}"] = torch.zeros(k_shape)
        cache[f"v_{i}"] = torch.zeros(v_shape)
    return {"tokens": torch.zeros((1, seq), dtype=torch.int32),
            "input_pos": torch.arange(seq, dtype=torch.int32), "kv_cache": cache}
