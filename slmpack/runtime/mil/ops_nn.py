"""Linear algebra, normalization-free reductions, top-k and softmax / attention MIL ops."""
from __future__ import annotations

import numpy as np

from .registry import f32, ints, register, scalar


@register("linear")
def linear(args, op):
    x, w = f32(args["x"]), f32(args["weight"])
    out = np.matmul(x, w.T)
    if "bias" in args:
        out = out + f32(args["bias"])
    return out


@register("matmul")
def matmul(args, op):
    x, y = f32(args["x"]), f32(args["y"])
    if bool(scalar(args["transpose_x"])) if "transpose_x" in args else False:
        x = np.swapaxes(x, -1, -2) if x.ndim > 1 else x
    if bool(scalar(args["transpose_y"])) if "transpose_y" in args else False:
        y = np.swapaxes(y, -1, -2) if y.ndim > 1 else y
    return np.matmul(x, y)


@register("softmax")
def softmax(args, op):
    x = f32(args["x"])
    axis = int(scalar(args["axis"])) if "axis" in args else -1
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _reduce(fn):
    def run(args, op):
        x = f32(args["x"])
        keep = bool(scalar(args["keep_dims"])) if "keep_dims" in args else False
        axes = tuple(ints(args["axes"])) if "axes" in args and args["axes"] is not None else None
        return fn(x, axis=axes, keepdims=keep)
    return run


def _l2_norm(x, axis, keepdims):
    """coremltools' reduce_l2_norm: sqrt(sum(x^2)) over axes (no epsilon)."""
    return np.sqrt(np.sum(np.square(x), axis=axis, keepdims=keepdims))


for _name, _fn in {"reduce_mean": np.mean, "reduce_sum": np.sum, "reduce_max": np.max, "reduce_min": np.min,
                   "reduce_prod": np.prod, "reduce_l2_norm": _l2_norm}.items():
    register(_name)(_reduce(_fn))


@register("topk")
def topk(args, op):
    """The k largest (``ascending``: smallest) along ``axis``, sorted, with int32 indices; equal
    values keep the lower index first (a stable sort: ONNX TopK's rule, and torch.topk's for the largest).
    ``sort=False`` leaves the order unspecified, so sorted is valid; ``return_indices=False``: values only."""
    x = np.asarray(args["x"])
    k = int(scalar(args["k"])) if "k" in args else 1
    axis = (int(scalar(args["axis"])) if "axis" in args else -1) % x.ndim
    ascending = bool(scalar(args["ascending"])) if "ascending" in args else False
    order = np.argsort(x if ascending else -f32(x), axis=axis, kind="stable")
    idx = np.take(order, np.arange(k), axis=axis)
    values = np.take_along_axis(x, idx, axis=axis)
    if "return_indices" in args and not bool(scalar(args["return_indices"])):
        return values
    return values, idx.astype(np.int32)


@register("scaled_dot_product_attention")
def sdpa(args, op):
    q, k, v = f32(args["query"]), f32(args["key"]), f32(args["value"])
    scores = np.matmul(q, np.swapaxes(k, -1, -2)) / np.sqrt(np.float32(q.shape[-1]))
    if "attn_mask" in args:
        mask = np.asarray(args["attn_mask"])
        scores = np.where(mask, scores, -np.inf) if mask.dtype == np.bool_ else scores + f32(mask)
    e = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return np.matmul(e / e.sum(axis=-1, keepdims=True), v)
