"""Normalization MIL ops (iOS15 / iOS17 ``normalization``).

``layer_norm(x, axes?, gamma?, beta?, epsilon?)``, as coremltools defines it
(``mil/ops/defs/iOS15/normalization.py``, value_inference):

    out = (x - mean(x, axes)) / sqrt(mean((x - mean)^2, axes) + epsilon) * gamma + beta

* ``axes`` defaults to every dimension; negative axes count from the end;
* ``gamma`` / ``beta`` default to ones / zeros and, when given, have shape ``x.shape[axes]`` with
  the axes taken in increasing order (not in the order ``axes`` lists them);
* ``epsilon`` defaults to 1e-5; the variance is the population variance (divided by the count);
* iOS17 lets gamma / beta / epsilon have another float type than ``x``: all are widened to fp32
  here, and the result is cast to the declared output type by the interpreter.
"""
from __future__ import annotations

import numpy as np

from .errors import MILRuntimeError
from .registry import f32, ints, register, scalar


def _normalized_axes(axes, rank: int, op) -> tuple[int, ...]:
    out = sorted({a + rank if a < 0 else a for a in axes})
    if any(not 0 <= a < rank for a in out) or len(out) != len(axes):
        raise MILRuntimeError(f"layer_norm {op.name!r}: axes {list(axes)} invalid for a rank-{rank} input")
    return tuple(out)


def _affine(v, x: np.ndarray, axes: tuple[int, ...], what: str, op) -> np.ndarray:
    """gamma / beta of shape x.shape[axes], reshaped to broadcast against x."""
    v = f32(v)
    want = tuple(x.shape[a] for a in axes)
    if v.shape != want:
        raise MILRuntimeError(f"layer_norm {op.name!r}: {what} has shape {v.shape}, x.shape[axes] is {want}")
    return v.reshape([x.shape[i] if i in axes else 1 for i in range(x.ndim)])


@register("layer_norm")
def layer_norm(args, op):
    x = f32(args["x"])
    axes = _normalized_axes(ints(args["axes"]) if "axes" in args else range(x.ndim), x.ndim, op)
    eps = np.float32(scalar(args["epsilon"])) if "epsilon" in args else np.float32(1e-5)
    centred = x - x.mean(axis=axes, keepdims=True)
    out = centred / np.sqrt(np.square(centred).mean(axis=axes, keepdims=True) + eps)
    if "gamma" in args:
        out = out * _affine(args["gamma"], x, axes, "gamma", op)
    if "beta" in args:
        out = out + _affine(args["beta"], x, axes, "beta", op)
    return out
