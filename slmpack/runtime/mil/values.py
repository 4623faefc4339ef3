"""MIL.proto ``Value`` / ``ValueType`` -> numpy arrays and python objects."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import dtypes
from .errors import MILFormatError


@dataclass(frozen=True)
class TensorSpec:
    """A declared variable: name, MIL type, shape (None = flexible dim); ``is_state`` for states."""

    name: str
    mil_type: dtypes.MILType | None     # None for non-tensor values (lists, tuples)
    shape: tuple[int | None, ...] | None
    is_state: bool = False

    def describe(self) -> str:
        dims = "?" if self.shape is None else ", ".join("?" if d is None else str(d) for d in self.shape)
        kind = "state" if self.is_state else "tensor"
        return f"{kind}<{self.mil_type.name if self.mil_type else 'object'}, [{dims}]>"


def tensor_spec(name: str, vtype) -> TensorSpec:
    kind = vtype.WhichOneof("type")
    is_state = kind == "stateType"
    if is_state:
        vtype = vtype.stateType.wrappedType
        kind = vtype.WhichOneof("type")
    if kind != "tensorType":
        return TensorSpec(name, None, None, is_state)
    t = vtype.tensorType
    shape = tuple(int(d.constant.size) if d.WhichOneof("dimension") == "constant" else None for d in t.dimensions)
    if any(d.WhichOneof("dimension") == "unknown" and d.unknown.variadic for d in t.dimensions):
        shape = None
    return TensorSpec(name, dtypes.from_proto(t.dataType), shape, is_state)


def decode_value(value, blobs) -> object:
    """A proto Value (immediate or blob-file) as a numpy array (tensors) or python list/tuple."""
    which = value.WhichOneof("value")
    if which == "blobFileValue":
        spec = tensor_spec("", value.type)
        if spec.mil_type is None or spec.shape is None or None in spec.shape:
            raise MILFormatError("blob-file value without a static tensor type")
        return blobs(value.blobFileValue.fileName).read(int(value.blobFileValue.offset), spec.mil_type, spec.shape)
    if which != "immediateValue":
        raise MILFormatError(f"value kind {which!r} is not supported")
    imm = value.immediateValue
    kind = imm.WhichOneof("value")
    if kind == "tensor":
        return _tensor(imm.tensor, tensor_spec("", value.type))
    if kind in ("list", "tuple"):
        items = [decode_value(v, blobs) for v in getattr(imm, kind).values]
        return items if kind == "list" else tuple(items)
    raise MILFormatError(f"immediate value kind {kind!r} is not supported")


def _tensor(tv, spec: TensorSpec) -> np.ndarray:
    t = spec.mil_type
    if t is None or spec.shape is None or None in spec.shape:
        raise MILFormatError("immediate tensor without a static tensor type")
    count = int(np.prod(spec.shape, dtype=np.int64))
    field = tv.WhichOneof("value")
    if t.name == "string":
        arr = np.array([v.decode() if isinstance(v, bytes) else v for v in tv.strings.values], dtype=object)
    elif field == "bytes":
        raw = np.frombuffer(tv.bytes.values, dtype=np.uint8)
        arr = (dtypes.unpack_bits(raw, t.bits, count, t.signed) if t.bits < 8
               else raw.view(t.np_dtype.newbyteorder("<")).astype(t.np_dtype))
    elif field is None:
        arr = np.zeros(0, dtype=t.np_dtype)
    else:
        arr = np.asarray(list(getattr(tv, field).values)).astype(t.np_dtype)
    if arr.size != count:
        raise MILFormatError(f"immediate tensor has {arr.size} values, type declares {count}")
    return arr.reshape(spec.shape)
