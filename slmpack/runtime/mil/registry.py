"""The interpreter's op table: MIL op type -> implementation. Explicit, duplicates refused.

An implementation receives ``args`` (param name -> value; variadic params such as ``concat``'s
``values`` arrive as lists) and the :class:`~.program.Op`; it returns one array, or a tuple for
multi-output ops. Casting to the declared output dtype is the interpreter's job, not the op's.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .errors import MILRuntimeError, UnsupportedOpError

OPS: dict[str, Callable] = {}
CONSTEXPR_OPS: set[str] = set()


def register(*names: str, constexpr: bool = False):
    def wrap(fn):
        for name in names:
            if name in OPS:
                raise ValueError(f"MIL op {name!r} is already registered")
            OPS[name] = fn
            if constexpr:
                CONSTEXPR_OPS.add(name)
        return fn
    return wrap


def f32(x) -> np.ndarray:
    """Float inputs computed in fp32 (fp16 tensors are widened; the result is rounded back later)."""
    x = np.asarray(x)
    return x.astype(np.float32) if x.dtype == np.float16 else x


def scalar(x):
    x = np.asarray(x)
    if x.size != 1:
        raise MILRuntimeError(f"expected a scalar, got shape {x.shape}")
    return x.reshape(()).item()


def ints(x) -> list[int]:
    return [int(v) for v in np.asarray(x).reshape(-1)]


def need(op, cond: bool, why: str) -> None:
    """Refuse an op variant we do not implement (typed, names the op)."""
    if not cond:
        raise UnsupportedOpError(op.type, why, op_name=op.name)


def lookup(op_type: str, op_name: str | None = None) -> Callable:
    fn = OPS.get(op_type)
    if fn is None:
        raise UnsupportedOpError(op_type, op_name=op_name)
    return fn
