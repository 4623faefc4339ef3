"""Core ML state ops (iOS18). A state input is bound to a :class:`StateSlot`; ``read_state``
returns a copy of its value, ``write_state`` replaces it (cast to the state's declared dtype, so an
fp16 KV cache is rounded to fp16 on write exactly as on device)."""
from __future__ import annotations

import numpy as np

from .errors import MILRuntimeError
from .registry import register


class StateSlot:
    def __init__(self, name: str, store: dict, dtype: np.dtype, shape: tuple):
        self.name, self.store, self.dtype, self.shape = name, store, dtype, shape


def _slot(x, op) -> StateSlot:
    if not isinstance(x, StateSlot):
        raise MILRuntimeError(f"{op.type} {op.name!r}: input is not a state")
    return x


@register("read_state")
def read_state(args, op):
    slot = _slot(args["input"], op)
    return np.array(slot.store[slot.name], copy=True)


@register("write_state")
def write_state(args, op):
    slot = _slot(args["input"], op)
    data = np.asarray(args["data"])
    if data.shape != slot.shape:
        raise MILRuntimeError(f"write_state {op.name!r}: value shape {data.shape} != state shape {slot.shape}")
    slot.store[slot.name] = data.astype(slot.dtype)
    return None
