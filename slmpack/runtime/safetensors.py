"""A strict safetensors reader (standard library + numpy; never pickle, never a foreign library).

Layout: u64 little-endian header length N, N bytes of UTF-8 JSON ``{name: {dtype, shape,
data_offsets: [start, end]}, "__metadata__": {str: str}}``, then the data. Everything is checked
before a byte of data is interpreted, because the device runner reads files it did not write:
the header has a size limit and must be a flat JSON object; dtypes are known; shapes are lists of
non-negative ints; offsets lie inside the data, match the byte count of the shape and dtype and do
not overlap. Any violation is ``BadInputError(E_SAFETENSORS_INVALID)`` naming the file.
"""
from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np

from .errors import BadInputError, ErrorCode

MAX_HEADER = 100 * 1024 * 1024        # the reference implementation's limit (100 MB)
MAX_TENSORS = 1 << 20
DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
          "I8": "i1", "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?"}


def _bad(path, message: str) -> BadInputError:
    return BadInputError(f"{Path(path).name}: {message}", ErrorCode.E_SAFETENSORS_INVALID,
                         details={"file": str(path)})


def _no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def parse_header(data: bytes, path="<bytes>") -> tuple[dict, int]:
    """(validated header without __metadata__, offset of the data section)."""
    if len(data) < 8:
        raise _bad(path, f"{len(data)} bytes: too short for a safetensors file")
    (n,) = struct.unpack("<Q", data[:8])
    if n > MAX_HEADER or n > len(data) - 8:
        raise _bad(path, f"header length {n} exceeds the file or the {MAX_HEADER}-byte limit")
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _bad(path, f"bad header ({type(exc).__name__}: {str(exc)[:120]})") from None
    if not isinstance(header, dict):
        raise _bad(path, "header is not a JSON object")
    meta = header.pop("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise _bad(path, "__metadata__ must map strings to strings")
    if len(header) > MAX_TENSORS:
        raise _bad(path, f"{len(header)} tensors exceed the limit of {MAX_TENSORS}")
    body = len(data) - 8 - n
    spans = []
    for name, info in header.items():
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise _bad(path, f"tensor {name!r}: expected exactly dtype, shape, data_offsets")
        if info["dtype"] not in DTYPES:
            raise _bad(path, f"tensor {name!r}: unknown dtype {info['dtype']!r}")
        shape, offsets = info["shape"], info["data_offsets"]
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise _bad(path, f"tensor {name!r}: shape {shape!r} is not a list of non-negative ints")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)):
            raise _bad(path, f"tensor {name!r}: data_offsets {offsets!r} is not [start, end]")
        start, end = offsets
        nbytes = math.prod(shape) * np.dtype(DTYPES[info["dtype"]]).itemsize
        if not 0 <= start <= end <= body or end - start != nbytes:
            raise _bad(path, f"tensor {name!r}: data_offsets {offsets} do not hold {nbytes} bytes inside "
                             f"the {body}-byte data section")
        spans.append((start, end, name))
    spans.sort()
    for (_, end_a, a), (start_b, _, b) in zip(spans, spans[1:]):
        if start_b < end_a:
            raise _bad(path, f"tensors {a!r} and {b!r} overlap")
    return header, 8 + n


def loads(data: bytes, path="<bytes>") -> dict[str, np.ndarray]:
    """Every tensor as a numpy array (BF16 widened to float32), copied out of ``data``."""
    header, base = parse_header(data, path)
    view = memoryview(data)[base:]
    out = {}
    for name, info in header.items():
        start, end = info["data_offsets"]
        arr = np.frombuffer(view[start:end], dtype=DTYPES[info["dtype"]]).reshape(info["shape"])
        if info["dtype"] == "BF16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        out[name] = arr.copy()
    return out


def load(path: Path) -> dict[str, np.ndarray]:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _bad(path, f"cannot read ({exc.strerror or exc})") from None
    return loads(data, path)


__all__ = ["load", "loads", "parse_header", "DTYPES", "MAX_HEADER"]
