"""Export wrappers: the reference module seen through one KV-cache layout each.

Every wrapper exposes the same decoder; only the calling convention differs:

* ``IOConcatProgram``  (input_ids, attention_mask, position_ids, *past) -> (logits, *present)
                       ONNX Runtime GenAI naming; one graph serves prefill (past=0) and decode.
* ``BufferProgram``    (tokens, input_pos) -> logits, cache in mutable buffers (ExecuTorch,
                       Core ML state). Prefill and decode are the same method with S tokens.
* ``StaticIOProgram``  (tokens, input_pos, *caches) -> (logits, *new_caches) (LiteRT, Core ML iOS 17).

``update=CacheUpdate.SLICE`` makes the two static wrappers write the cache by slice assignment
instead of ``index_copy`` (see ``kv_cache.py``; Core ML needs it).

The cache lists are ordered ``k0, v0, k1, v1, ...`` (layer-major), the order the ONNX names use.
"""
from __future__ import annotations

import torch
from torch import nn

from slmpack.exporter.kv_cache import (CacheUpdate, ConcatCache, SliceBufferCache, SliceIOCache, StaticBufferCache,
                                       StaticIOCache)
from slmpack.exporter.reference import ReferenceModel


def _split(caches) -> tuple[list, list]:
    return list(caches[0::2]), list(caches[1::2])


def _interleave(ks, vs) -> list:
    out = []
    for k, v in zip(ks, vs):
        out += [k, v]
    return out


class IOConcatProgram(nn.Module):
    def __init__(self, ref: ReferenceModel):
        super().__init__()
        self.ref = ref

    def forward(self, input_ids, attention_mask, position_ids, *past):
        ks, vs = _split(past)
        cache = ConcatCache(ks, vs)
        logits = self.ref.step(input_ids, position_ids[0], cache, key_mask=attention_mask)
        return (logits, *_interleave(cache.present_k, cache.present_v))


class BufferProgram(nn.Module):
    def __init__(self, ref: ReferenceModel, max_context: int, dtype=torch.float32,
                 update: CacheUpdate = CacheUpdate.INDEX_COPY):
        super().__init__()
        self.ref = ref
        self._cache_cls = SliceBufferCache if update is CacheUpdate.SLICE else StaticBufferCache
        spec = ref.spec
        shape = (1, spec.num_kv_heads, max_context, spec.head_dim)
        for i in range(spec.num_layers):
            self.register_buffer(f"k_cache_{i}", torch.zeros(shape, dtype=dtype), persistent=False)
            self.register_buffer(f"v_cache_{i}", torch.zeros(shape, dtype=dtype), persistent=False)

    def caches(self):
        n = self.ref.spec.num_layers
        return ([getattr(self, f"k_cache_{i}") for i in range(n)],
                [getattr(self, f"v_cache_{i}") for i in range(n)])

    def forward(self, tokens, input_pos):
        ks, vs = self.caches()
        return self.ref.step(tokens, input_pos, self._cache_cls(ks, vs, input_pos))


class StaticIOProgram(nn.Module):
    def __init__(self, ref: ReferenceModel, update: CacheUpdate = CacheUpdate.INDEX_COPY):
        super().__init__()
        self.ref = ref
        self._cache_cls = SliceIOCache if update is CacheUpdate.SLICE else StaticIOCache

    def forward(self, tokens, input_pos, *caches):
        ks, vs = _split(caches)
        cache = self._cache_cls(ks, vs, input_pos)
        logits = self.ref.step(tokens, input_pos, cache)
        return (logits, *_interleave(cache.k_out, cache.v_out))
