"""Compile-time decompression ops (weight compression). Evaluated once when a program is loaded.

* ``constexpr_affine_dequantize`` (iOS16): ``scale * (quantized_data - zero_point)`` along ``axis``.
* ``constexpr_blockwise_shift_scale`` (iOS18): ``scale * (data - offset)`` with one scale per block;
  ``block_size[i] = data.shape[i] / scale.shape[i]``.
* ``constexpr_lut_to_dense``: iOS16 (packed ``indices`` bytes, one ``lut``, ``shape``) and iOS18
  (unpacked sub-byte ``indices``, per-block ``lut`` of rank ``rank(indices) + 2``, scalar entries).
"""
from __future__ import annotations

import numpy as np

from .dtypes import unpack_bits
from .errors import MILRuntimeError
from .registry import f32, ints, need, register, scalar


def _along(v: np.ndarray, rank: int, axis: int) -> np.ndarray:
    v = np.asarray(v)
    if v.ndim == 0 or v.size == 1:
        return v.reshape(())
    shape = [1] * rank
    shape[axis] = v.size
    return v.reshape(shape)


@register("constexpr_affine_dequantize", constexpr=True)
def affine_dequantize(args, op):
    q = np.asarray(args["quantized_data"])
    axis = int(scalar(args["axis"])) % q.ndim
    zp = _along(args["zero_point"], q.ndim, axis).astype(np.float32)
    scale = _along(args["scale"], q.ndim, axis)
    return (q.astype(np.float32) - zp) * f32(scale)


def _expand_blocks(v: np.ndarray, shape: tuple[int, ...], op) -> np.ndarray:
    v = np.asarray(v)
    if v.ndim != len(shape) or any(s % b for s, b in zip(shape, v.shape)):
        raise MILRuntimeError(f"{op.type} {op.name!r}: block tensor {v.shape} does not tile data {shape}")
    for axis, (s, b) in enumerate(zip(shape, v.shape)):
        if s != b:
            v = np.repeat(v, s // b, axis=axis)
    return v


@register("constexpr_blockwise_shift_scale", constexpr=True)
def blockwise_shift_scale(args, op):
    data = np.asarray(args["data"])
    out = data.astype(np.float32)
    if "offset" in args:
        out = out - _expand_blocks(args["offset"], data.shape, op).astype(np.float32)
    return out * _expand_blocks(f32(args["scale"]), data.shape, op)


@register("constexpr_lut_to_dense", constexpr=True)
def lut_to_dense(args, op):
    lut = np.asarray(args["lut"])
    if "shape" in args:                                   # iOS16: packed uint8 indices, one palette
        shape = ints(args["shape"])
        nbits = int(np.log2(lut.size))
        count = int(np.prod(shape))
        idx = unpack_bits(np.asarray(args["indices"]), nbits, count, signed=False)
        return lut.reshape(-1)[idx.astype(np.int64)].reshape(shape)
    indices = np.asarray(args["indices"]).astype(np.int64)  # iOS18: per-block palettes
    k = indices.ndim
    need(op, lut.ndim == k + 2 and lut.shape[-1] == 1, "vector palettization (VECTOR_SIZE > 1)")
    block = []
    for axis in range(k):
        if indices.shape[axis] % lut.shape[axis]:
            raise MILRuntimeError(f"{op.type} {op.name!r}: lut {lut.shape} does not tile indices {indices.shape}")
        block.append(indices.shape[axis] // lut.shape[axis])
    grid = np.meshgrid(*[np.arange(n) // b for n, b in zip(indices.shape, block)], indexing="ij")
    return lut[(*grid, indices, 0)]
