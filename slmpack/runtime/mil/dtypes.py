"""MIL data types (MIL.proto ``DataType`` and op ``dtype`` strings) as numpy dtypes.

Sub-byte integer types (int4, uint1..uint6) are held unpacked in int8 / uint8 arrays.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from coremltools.proto import MIL_pb2

from .errors import MILFormatError


@dataclass(frozen=True)
class MILType:
    name: str          # MIL spelling: fp16, fp32, int32, int4, bool, ...
    np_dtype: np.dtype
    bits: int          # storage width (4 for int4)
    signed: bool

    @property
    def is_float(self) -> bool:
        return self.np_dtype.kind == "f"


def _t(name, dtype, bits, signed=True):
    return MILType(name, np.dtype(dtype), bits, signed)


_DT = MIL_pb2
BY_PROTO = {
    _DT.BOOL: _t("bool", np.bool_, 8, False), _DT.STRING: _t("string", np.object_, 0, False),
    _DT.FLOAT16: _t("fp16", np.float16, 16), _DT.FLOAT32: _t("fp32", np.float32, 32),
    _DT.FLOAT64: _t("fp64", np.float64, 64),
    _DT.INT8: _t("int8", np.int8, 8), _DT.INT16: _t("int16", np.int16, 16),
    _DT.INT32: _t("int32", np.int32, 32), _DT.INT64: _t("int64", np.int64, 64),
    _DT.UINT8: _t("uint8", np.uint8, 8, False), _DT.UINT16: _t("uint16", np.uint16, 16, False),
    _DT.UINT32: _t("uint32", np.uint32, 32, False), _DT.UINT64: _t("uint64", np.uint64, 64, False),
    _DT.INT4: _t("int4", np.int8, 4), _DT.UINT4: _t("uint4", np.uint8, 4, False),
    _DT.UINT1: _t("uint1", np.uint8, 1, False), _DT.UINT2: _t("uint2", np.uint8, 2, False),
    _DT.UINT3: _t("uint3", np.uint8, 3, False), _DT.UINT6: _t("uint6", np.uint8, 6, False),
}
BY_NAME = {t.name: t for t in BY_PROTO.values()}
BY_NAME.update({"int": BY_NAME["int32"], "fp": BY_NAME["fp32"]})


def from_proto(code: int) -> MILType:
    try:
        return BY_PROTO[code]
    except KeyError:
        name = MIL_pb2.DataType.Name(code) if code in MIL_pb2.DataType.values() else str(code)
        raise MILFormatError(f"MIL data type {name} is not supported by the interpreter",
                             details={"dtype": name}) from None


def from_name(name: str) -> MILType:
    try:
        return BY_NAME[name]
    except KeyError:
        raise MILFormatError(f"MIL dtype {name!r} is not supported by the interpreter") from None


def unpack_bits(packed: np.ndarray, bits: int, count: int, signed: bool) -> np.ndarray:
    """Sub-byte values packed LSB-first within each byte (MIL blob / immediate-value layout)."""
    flat = np.unpackbits(np.asarray(packed, dtype=np.uint8), bitorder="little")
    if flat.size < bits * count:
        raise MILFormatError(f"packed {bits}-bit data too short: {packed.size} bytes for {count} values")
    vals = flat[: bits * count].reshape(count, bits).astype(np.uint16)
    out = (vals << np.arange(bits, dtype=np.uint16)).sum(axis=1)
    if signed:
        out = np.where(out >= (1 << (bits - 1)), out.astype(np.int16) - (1 << bits), out)
        return out.astype(np.int8)
    return out.astype(np.uint8)
