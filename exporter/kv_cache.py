"""KV-cache strategies. The reference module's attention calls ``cache.update(layer, k, v)`` and
gets back the full keys/values to attend over; *how* the cache is held is the strategy's job.

* ``ConcatCache``      past tensors in, ``present = cat(past, new)`` out (ONNX Runtime GenAI).
* ``StaticBufferCache`` fixed-size mutable buffers updated in place with ``index_copy_``
                        (ExecuTorch mutable buffers; Core ML state).
* ``StaticIOCache``     fixed-size caches as inputs, updated copies as outputs (LiteRT external
                        cache, Core ML iOS 17).

The two static strategies write new keys/values either with ``index_copy`` (``CacheUpdate.INDEX_COPY``,
the default) or by slice assignment at ``input_pos[0]`` (``CacheUpdate.SLICE``:
``cache[:, :, start:start + S] = k``, as Apple's stateful Core ML examples do; coremltools 9 has no
``index_copy`` converter). Slice assignment assumes the S positions are consecutive, which is how
every runner feeds them.
"""
from __future__ import annotations

import enum

import torch


class CacheLayout(str, enum.Enum):
    IO_CONCAT = "io_concat"
    BUFFER = "buffer"
    IO_STATIC = "io_static"


class ConcatCache:
    """``store_dtype``: what is kept for the next call is rounded to it, as by a runtime whose cache
    holds that dtype (Core ML's fp16 states: a call attends over the rounded past and its own exact
    keys/values); None keeps everything exact."""

    def __init__(self, past_k: list[torch.Tensor], past_v: list[torch.Tensor],
                 store_dtype: torch.dtype | None = None):
        self.past_k, self.past_v, self.store_dtype = past_k, past_v, store_dtype
        self.present_k: list[torch.Tensor] = [None] * len(past_k)  # type: ignore[list-item]
        self.present_v: list[torch.Tensor] = [None] * len(past_v)  # type: ignore[list-item]

    def key_positions(self, seq_len: int, device=None) -> torch.Tensor:
        return torch.arange(self.past_k[0].shape[2] + seq_len, device=device)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        keys, values = torch.cat([self.past_k[layer], k], dim=2), torch.cat([self.past_v[layer], v], dim=2)
        if self.store_dtype is None:
            self.present_k[layer], self.present_v[layer] = keys, values
        else:
            self.present_k[layer] = keys.to(self.store_dtype).to(keys.dtype)
            self.present_v[layer] = values.to(self.store_dtype).to(values.dtype)
        return keys, values


class StaticBufferCache:
    def __init__(self, k_bufs: list[torch.Tensor], v_bufs: list[torch.Tensor], input_pos: torch.Tensor):
        self.k_bufs, self.v_bufs, self.input_pos = k_bufs, v_bufs, input_pos

    def key_positions(self, seq_len: int, device=None) -> torch.Tensor:
        return torch.arange(self.k_bufs[0].shape[2], device=device)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        self.k_bufs[layer].index_copy_(2, self.input_pos, k)
        self.v_bufs[layer].index_copy_(2, self.input_pos, v)
        return self.k_bufs[layer], self.v_bufs[layer]


class StaticIOCache:
    def __init__(self, k_in: list[torch.Tensor], v_in: list[torch.Tensor], input_pos: torch.Tensor):
        self.k_in, self.v_in, self.input_pos = k_in, v_in, input_pos
        self.k_out: list[torch.Tensor] = [None] * len(k_in)  # type: ignore[list-item]
        self.v_out: list[torch.Tensor] = [None] * len(v_in)  # type: ignore[list-item]

    def key_positions(self, seq_len: int, device=None) -> torch.Tensor:
        return torch.arange(self.k_in[0].shape[2], device=device)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        self.k_out[layer] = self.k_in[layer].index_copy(2, self.input_pos, k)
        self.v_out[layer] = self.v_in[layer].index_copy(2, self.input_pos, v)
        return self.k_out[layer], self.v_out[layer]


class CacheUpdate(str, enum.Enum):
    INDEX_COPY = "index_copy"
    SLICE = "slice"


def _slice_start(input_pos: torch.Tensor, seq_len: int, cache_len: int):
    """First written position as a (data-dependent) int that torch.export can bound."""
    start = input_pos[0].item()
    torch._check_is_size(start)
    torch._check(start + seq_len <= cache_len)
    return start


class SliceBufferCache(StaticBufferCache):
    """StaticBufferCache written by slice assignment (positions input_pos[0] .. +S-1)."""

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        s = k.shape[2]
        start = _slice_start(self.input_pos, s, self.k_bufs[layer].shape[2])
        # ``buf[:, :, start:start + s] = k`` written as a whole-buffer copy of a slice_scatter: the same
        # values, but converters see equal shapes (coremltools otherwise broadcasts the two symbolic
        # lengths and picks one from a set: nondeterministic bytes)
        self.k_bufs[layer].copy_(self.k_bufs[layer].slice_scatter(k, 2, start, start + s))
        self.v_bufs[layer].copy_(self.v_bufs[layer].slice_scatter(v, 2, start, start + s))
        return self.k_bufs[layer], self.v_bufs[layer]


class SliceIOCache(StaticIOCache):
    """StaticIOCache whose outputs are ``slice_scatter`` copies (positions input_pos[0] .. +S-1)."""

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        s = k.shape[2]
        start = _slice_start(self.input_pos, s, self.k_in[layer].shape[2])
        self.k_out[layer] = self.k_in[layer].slice_scatter(k, 2, start, start + s)
        self.v_out[layer] = self.v_in[layer].slice_scatter(v, 2, start, start + s)
        return self.k_out[layer], self.v_out[layer]
