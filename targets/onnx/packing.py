"""Bit packing for ONNX Runtime's block-quantized contrib ops (MatMulNBits, GatherBlockQuantized).

Convention (ORT contrib op schemas, onnxruntime 1.32 ``get_all_operator_schema()``):

* codes are *unsigned* ``u in [0, 2^bits)``; dequantization is ``(u - zero_point) * scale`` per
  block of ``block_size`` consecutive K (input) columns; the default zero point is ``2^(bits-1)``;
* codes are packed along K, low bits first: for 4 bits byte ``j`` of a row holds codes ``2j``
  (low nibble) and ``2j+1`` (high nibble); MatMulNBits' B is ``[N, k_blocks, block_size*bits/8]``,
  GatherBlockQuantized's uint8 data is the same bytes as ``[rows, K*bits/8]``;
* packed zero points (uint8) are ``[N, ceil(k_blocks*bits/8)]``, packed the same way.

The QuantPlan stores signed codes ``q in [-2^(b-1), 2^(b-1)-1]`` and signed zero points
``zp = z_u - 2^(b-1)``, so ``u = q + 2^(b-1)`` and ``z_u = zp + 2^(b-1)``: ``u - z_u = q - zp``
exactly, and a symmetric plan (no zero point) maps onto the default zero point.
"""
from __future__ import annotations

import numpy as np

MIN_BLOCK = 16  # MatMulNBits / GatherBlockQuantized: power of two >= 16


def to_unsigned(q: np.ndarray, bits: int) -> np.ndarray:
    return (q.astype(np.int16) + (1 << (bits - 1))).astype(np.uint8)


def to_signed(u: np.ndarray, bits: int) -> np.ndarray:
    return (u.astype(np.int16) - (1 << (bits - 1))).astype(np.int8)


def pack(u: np.ndarray, bits: int) -> np.ndarray:
    """uint8 codes [..., K] -> packed uint8 [..., ceil(K*bits/8)] (low bits first)."""
    u = np.ascontiguousarray(u, dtype=np.uint8)
    if bits == 8:
        return u.copy()
    if bits != 4:
        raise ValueError(f"unsupported bit width {bits}")
    if u.shape[-1] % 2:
        u = np.concatenate([u, np.zeros((*u.shape[:-1], 1), np.uint8)], axis=-1)
    pairs = u.reshape(*u.shape[:-1], u.shape[-1] // 2, 2)
    return (pairs[..., 0] | (pairs[..., 1] << 4)).astype(np.uint8)


def unpack(b: np.ndarray, bits: int, k: int) -> np.ndarray:
    """Inverse of ``pack``: packed uint8 [..., n] -> codes [..., k]."""
    b = np.asarray(b, dtype=np.uint8)
    if bits == 8:
        return b[..., :k].copy()
    if bits != 4:
        raise ValueError(f"unsupported bit width {bits}")
    out = np.stack([b & 0x0F, b >> 4], axis=-1).reshape(*b.shape[:-1], b.shape[-1] * 2)
    return out[..., :k]


def nbits_block(group_size: int | None, k: int) -> int | None:
    """Block size to encode a plan group along K: the group itself (power of two >= 16), or for
    per-channel the whole row when K is such a power of two, else the largest power-of-two
    divisor of K that is >= 16 (the row's one scale is then repeated per block: same numbers).
    ``None`` when no block fits."""
    if group_size is not None:
        return group_size if group_size >= MIN_BLOCK and k % group_size == 0 else None
    if k >= MIN_BLOCK and k & (k - 1) == 0:
        return k
    b = k & -k  # largest power of two dividing k
    return b if b >= MIN_BLOCK else None


def expand_groups(t: np.ndarray, block: int, group_size: int | None, k: int) -> np.ndarray:
    """Per-group parameters [rows, n_groups] -> per-block [rows, k // block]."""
    n_groups = 1 if group_size is None else k // group_size
    return np.repeat(t, (k // block) // n_groups, axis=1)
