"""KV-cache strategies. The reference module's attention calls ``cache.update(layer, k, v)`` and
gets back the full keys/values to attend over; *how* the cache is held is the strategy's job.

* ``ConcatCache``      past tensors in, ``present = cat(past, new)`` out (ONNX Runtime GenAI).
* ``StaticBufferCache`` fixed-size mutable buffers updated in place with ``index_copy_``
                        (ExecuTorch mutable buffers; Core ML state).
* ``StaticIOCache``     fixed-size caches as inputs, updated copies as outputs (LiteRT external
                        cache, Core ML iOS 17).
"""
from __future__ import annotations

import enum

import torch


class CacheLayout(str, enum.Enum):
    IO_CONCAT = "io_concat"
    BUFFER = "buffer"
    IO_STATIC = "io_static"


class ConcatCache:
    def __init__(self, past_k: list[torch.Tensor], past_v: list[torch.Tensor]):
        self.past_k, self.past_v = past_k, past_v
        self.present_k: list[torch.Tensor] = [None] * len(past_k)  # type: ignore[list-item]
        self.present_v: list[torch.Tensor] = [None] * len(past_v)  # type: ignore[list-item]

    def key_positions(self, seq_len: int, device=None) -> torch.Tensor:
        return torch.arange(self.past_k[0].shape[2] + seq_len, device=device)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        self.present_k[layer] = torch.cat([self.past_k[layer], k], dim=2)
        self.present_v[layer] = torch.cat([self.past_v[layer], v], dim=2)
        return self.present_k[layer], self.present_v[layer]


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
