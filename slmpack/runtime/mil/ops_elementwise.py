"""Element-wise MIL ops (iOS15 ``elementwise_binary`` / ``elementwise_unary`` / ``activation``)."""
from __future__ import annotations

import numpy as np

from . import dtypes
from .registry import f32, need, register, scalar
from .special import erf as _erf

_BINARY = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "real_div": np.true_divide,
    "maximum": np.maximum, "minimum": np.minimum, "pow": np.power,
    "equal": np.equal, "not_equal": np.not_equal, "less": np.less, "less_equal": np.less_equal,
    "greater": np.greater, "greater_equal": np.greater_equal,
    "logical_and": np.logical_and, "logical_or": np.logical_or, "logical_xor": np.logical_xor,
}


def _binary(fn):
    def run(args, op):
        return fn(f32(args["x"]), f32(args["y"]))
    return run


for _name, _fn in _BINARY.items():
    register(_name)(_binary(_fn))


@register("floor_div")
def floor_div(args, op):
    x, y = f32(args["x"]), f32(args["y"])
    return np.floor_divide(x, y)


def _unary(fn):
    def run(args, op):
        return fn(f32(args["x"]))
    return run


_UNARY = {
    "abs": np.abs, "exp": np.exp, "sqrt": np.sqrt, "tanh": np.tanh, "sin": np.sin, "cos": np.cos,
    "floor": np.floor, "ceil": np.ceil, "sign": np.sign, "logical_not": np.logical_not,
    "relu": lambda x: np.maximum(x, 0), "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "silu": lambda x: x / (1.0 + np.exp(-x)),
}
for _name, _fn in _UNARY.items():
    register(_name)(_unary(_fn))


_GELU = {
    "EXACT": lambda x: 0.5 * x * (1.0 + _erf(x / np.sqrt(np.float32(2.0)))),
    "TANH_APPROXIMATION": lambda x: 0.5 * x * (1.0 + np.tanh(np.sqrt(np.float32(2.0 / np.pi))
                                                             * (x + np.float32(0.044715) * x ** 3))),
    "SIGMOID_APPROXIMATION": lambda x: x / (1.0 + np.exp(np.float32(-1.702) * x)),
}


@register("gelu")
def gelu(args, op):
    mode = str(scalar(args["mode"])) if "mode" in args else "EXACT"
    need(op, mode in _GELU, f"gelu mode {mode!r}")
    x = f32(args["x"])
    return _GELU[mode](x).astype(x.dtype)


@register("rsqrt")
def rsqrt(args, op):
    eps = scalar(args["epsilon"]) if "epsilon" in args else 1e-12
    return 1.0 / np.sqrt(f32(args["x"]) + np.float32(eps))


@register("inverse")
def inverse(args, op):
    eps = scalar(args["epsilon"]) if "epsilon" in args else 1e-4
    return 1.0 / (f32(args["x"]) + np.float32(eps))


@register("log")
def log(args, op):
    eps = scalar(args["epsilon"]) if "epsilon" in args else 1e-45
    return np.log(f32(args["x"]) + np.float32(eps))


@register("cast")
def cast(args, op):
    target = dtypes.from_name(str(scalar(args["dtype"])))
    x = np.asarray(args["x"])
    need(op, not (x.dtype.kind == "f" and target.np_dtype.kind in "iu"),
         "float -> integer casts (rounding mode unspecified) are not implemented")
    return x.astype(target.np_dtype)


@register("clip")
def clip(args, op):
    return np.clip(f32(args["x"]), scalar(args["alpha"]), scalar(args["beta"]))


@register("select")
def select(args, op):
    return np.where(np.asarray(args["cond"]).astype(bool), args["a"], args["b"])
