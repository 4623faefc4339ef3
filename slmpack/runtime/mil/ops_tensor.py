"""Shape, slicing and indexing MIL ops (iOS15-18 ``tensor_transformation`` / ``tensor_operation`` /
``scatter_gather``)."""
from __future__ import annotations

import numpy as np

from .errors import MILRuntimeError
from .registry import ints, need, register, scalar


def _flag(args, name, default=False) -> bool:
    return bool(scalar(args[name])) if name in args else default


@register("shape")
def shape(args, op):
    return np.array(np.asarray(args["x"]).shape, dtype=np.int32)


@register("reshape")
def reshape(args, op):
    x = np.asarray(args["x"])
    target = ints(args["shape"])
    # iOS17 semantics (a superset of iOS15's): each 0 copies the x dim at the same distance from the right
    out = []
    for i, d in enumerate(target):
        if d == 0:
            j = x.ndim - (len(target) - i)
            out.append(x.shape[j] if j >= 0 else 1)
        else:
            out.append(d)
    try:
        return x.reshape(out)
    except ValueError as e:
        raise MILRuntimeError(f"reshape {op.name!r}: {x.shape} -> {target}: {e}") from None


@register("transpose")
def transpose(args, op):
    return np.transpose(args["x"], ints(args["perm"]))


@register("expand_dims")
def expand_dims(args, op):
    x = np.asarray(args["x"])
    axes = ints(args["axes"])
    rank = x.ndim + len(axes)
    return np.expand_dims(x, tuple(a + rank if a < 0 else a for a in axes))


@register("squeeze")
def squeeze(args, op):
    x = np.asarray(args["x"])
    if "axes" not in args:
        return np.squeeze(x)
    axes = [a % x.ndim for a in ints(args["axes"])]
    return np.squeeze(x, tuple(a for a in axes if x.shape[a] == 1))   # torch-like: non-1 dims are kept


def _slices(args, x: np.ndarray):
    n = x.ndim
    begin, end = ints(args["begin"]), ints(args["end"])
    stride = ints(args["stride"]) if "stride" in args else [1] * n
    bm = [bool(v) for v in np.asarray(args.get("begin_mask", [False] * n)).reshape(-1)]
    em = [bool(v) for v in np.asarray(args.get("end_mask", [False] * n)).reshape(-1)]
    sm = [bool(v) for v in np.asarray(args.get("squeeze_mask", [False] * n)).reshape(-1)]
    if not (len(begin) == len(end) == len(stride) == n):
        raise MILRuntimeError(f"slice of a rank-{n} tensor with begin/end/stride of lengths "
                              f"{len(begin)}/{len(end)}/{len(stride)}")
    idx = []
    for i in range(n):
        if sm[i]:
            b = begin[i] + x.shape[i] if begin[i] < 0 else begin[i]
            if not 0 <= b < x.shape[i]:
                raise MILRuntimeError(f"squeeze index {begin[i]} out of range for dim {i} of {x.shape}")
            idx.append(b)
        else:
            idx.append(slice(None if bm[i] else begin[i], None if em[i] else end[i], stride[i]))
    return tuple(idx)


@register("slice_by_index")
def slice_by_index(args, op):
    x = np.asarray(args["x"])
    return np.array(x[_slices(args, x)])


@register("slice_update")
def slice_update(args, op):
    x = np.array(args["x"], copy=True)
    idx = _slices(args, x)
    update = np.asarray(args["update"])
    if x[idx].shape != update.shape:
        raise MILRuntimeError(f"slice_update {op.name!r}: slice shape {x[idx].shape} != update {update.shape}")
    x[idx] = update
    return x


@register("concat")
def concat(args, op):
    values = [np.asarray(v) for v in args["values"]]
    values = [v.reshape(1) if v.ndim == 0 else v for v in values]   # MIL: scalars concat as length-1 vectors
    axis = int(scalar(args["axis"]))
    if _flag(args, "interleave"):
        axis = axis % values[0].ndim
        stacked = np.stack(values, axis=axis + 1)
        shape = list(values[0].shape)
        shape[axis] *= len(values)
        return stacked.reshape(shape)
    return np.concatenate(values, axis=axis)


@register("split")
def split(args, op):
    x = np.asarray(args["x"])
    axis = int(scalar(args["axis"]))
    if "split_sizes" in args:
        cuts = np.cumsum(ints(args["split_sizes"]))[:-1]
        return tuple(np.split(x, cuts, axis=axis))
    return tuple(np.split(x, int(scalar(args["num_splits"])), axis=axis))


@register("tile")
def tile(args, op):
    return np.tile(args["x"], ints(args["reps"]))


@register("range_1d")
def range_1d(args, op):
    return np.arange(scalar(args["start"]), scalar(args["end"]), scalar(args["step"]))


@register("fill")
def fill(args, op):
    return np.full(ints(args["shape"]), scalar(args["value"]) if "value" in args else 0.0)


@register("fill_like")
def fill_like(args, op):
    """iOS16: ``ref_tensor``'s shape, filled with ``value`` (default 0.0) in ``value``'s type."""
    return np.full(np.shape(args["ref_tensor"]), scalar(args["value"]) if "value" in args else 0.0)


def _check_indices(idx: np.ndarray, size: int, op) -> np.ndarray:
    idx = np.asarray(idx).astype(np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= size):
        # iOS17+ semantics: negatives are out of bounds; undefined on device, an error here
        raise MILRuntimeError(f"{op.type} {op.name!r}: index out of range [0, {size}): "
                              f"min {idx.min()}, max {idx.max()}")
    return idx


@register("gather")
def gather(args, op):
    x = np.asarray(args["x"])
    axis = int(scalar(args["axis"])) if "axis" in args else 0
    need(op, int(scalar(args["batch_dims"])) == 0 if "batch_dims" in args else True, "batch_dims != 0")
    axis %= x.ndim
    return np.take(x, _check_indices(args["indices"], x.shape[axis], op), axis=axis)


_SCATTER = {"update": None, "add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.true_divide,
            "max": np.maximum, "min": np.minimum}


@register("scatter")
def scatter(args, op):
    data = np.array(args["data"], copy=True)
    axis = (int(scalar(args["axis"])) if "axis" in args else 0) % data.ndim
    mode = str(scalar(args["mode"])) if "mode" in args else "update"
    need(op, mode in _SCATTER, f"mode {mode!r}")
    idx = _check_indices(args["indices"], data.shape[axis], op)
    need(op, idx.ndim == 1, "indices of rank != 1")
    updates = np.moveaxis(np.asarray(args["updates"]), axis, 0)
    view = np.moveaxis(data, axis, 0)            # a view: writes land in data
    for i, j in enumerate(idx):                  # sequential, so duplicate indices resolve like Core ML's loop
        view[j] = updates[i] if _SCATTER[mode] is None else _SCATTER[mode](view[j], updates[i])
    return data


@register("band_part")
def band_part(args, op):
    x = np.asarray(args["x"])
    lower = int(scalar(args["lower"])) if "lower" in args else -1
    upper = int(scalar(args["upper"])) if "upper" in args else -1
    m, n = np.ogrid[: x.shape[-2], : x.shape[-1]]
    keep = ((lower < 0) | (m - n <= lower)) & ((upper < 0) | (n - m <= upper))
    return np.where(keep, x, np.zeros_like(x))


@register("identity")
def identity(args, op):
    return np.array(args["x"], copy=True)
