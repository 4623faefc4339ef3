"""A strict safetensors reader over an already-opened, confined file descriptor.

The header is validated before any tensor is touched: at most 100 MB, a JSON object, known dtypes,
non-negative shapes, data offsets that tile the data section exactly (no gaps, no overlap, no
reading past the end). Tensors come from one ``mmap`` of the descriptor we checked, so no path is
re-opened. Float tensors are checked finite one at a time (streamed).
"""
from __future__ import annotations

import mmap
import math
import os
import struct
import warnings
from dataclasses import dataclass

import torch

from slmpack.errors import BadInputError
from slmpack.confine import parse_json

MAX_HEADER_BYTES = 100_000_000  # the safetensors format's own limit

DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


def _corrupt(where: str, why: str) -> BadInputError:
    return BadInputError(f"{where}: corrupt safetensors header ({why})", "E_WEIGHTS_CORRUPT")


def read_header(f, where: str) -> tuple[int, list[TensorInfo]]:
    """(offset of the data section, tensors sorted by offset) from an open binary file."""
    size = os.fstat(f.fileno()).st_size
    head = f.read(8)
    if len(head) < 8:
        raise _corrupt(where, "file shorter than 8 bytes")
    (n,) = struct.unpack("<Q", head)
    if n > MAX_HEADER_BYTES or n > size - 8:
        raise _corrupt(where, f"header length {n} exceeds the file or the {MAX_HEADER_BYTES}-byte limit")
    raw = f.read(n)
    if not raw.lstrip().startswith(b"{"):
        raise _corrupt(where, "header is not a JSON object")
    try:
        header = parse_json(raw.rstrip(b" "), where, "E_WEIGHTS_CORRUPT")
    except BadInputError as e:
        raise _corrupt(where, e.message) from None
    if not isinstance(header, dict):
        raise _corrupt(where, "header is not a JSON object")
    data_len = size - 8 - n
    infos = []
    for name, entry in header.items():
        if name == "__metadata__":
            if not (isinstance(entry, dict) and all(isinstance(v, str) for v in entry.values())):
                raise _corrupt(where, "__metadata__ must map strings to strings")
            continue
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise _corrupt(where, f"entry {name!r:.60} needs exactly dtype, shape, data_offsets")
        dtype, shape, offs = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in DTYPES:
            raise _corrupt(where, f"tensor {name!r:.60} has unsupported dtype {dtype!r:.20}")
        if not (isinstance(shape, list) and all(type(d) is int and 0 <= d < 2**40 for d in shape)):
            raise _corrupt(where, f"tensor {name!r:.60} has an invalid shape")
        if not (isinstance(offs, list) and len(offs) == 2 and all(type(o) is int for o in offs)
                and 0 <= offs[0] <= offs[1] <= data_len):
            raise _corrupt(where, f"tensor {name!r:.60} has data offsets outside the file")
        nbytes = math.prod(shape) * torch.empty((), dtype=DTYPES[dtype]).element_size()
        if offs[1] - offs[0] != nbytes:
            raise _corrupt(where, f"tensor {name!r:.60}: {offs[1] - offs[0]} bytes for shape {shape} {dtype}")
        infos.append(TensorInfo(name, dtype, tuple(shape), offs[0], offs[1]))
    infos.sort(key=lambda t: (t.begin, t.end))
    pos = 0
    for t in infos:
        if t.begin != pos:
            raise _corrupt(where, f"tensor {t.name!r:.60} does not start where the previous one ends")
        pos = t.end
    if pos != data_len:
        raise _corrupt(where, f"{data_len - pos} bytes after the last tensor")
    return 8 + n, infos


def load_tensors(f, where: str) -> dict[str, torch.Tensor]:
    """Every tensor of an open safetensors file (copied out of the mapping); non-finite float
    values are refused tensor by tensor (E_WEIGHTS_NONFINITE)."""
    start, infos = read_header(f, where)
    out: dict[str, torch.Tensor] = {}
    if not infos:
        return out
    with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        for t in infos:
            dtype = DTYPES[t.dtype]
            count = math.prod(t.shape)
            if count == 0:
                tensor = torch.empty(t.shape, dtype=dtype)
            else:
                with warnings.catch_warnings():  # read-only mapping: we copy out, never write
                    warnings.simplefilter("ignore", UserWarning)
                    view = torch.frombuffer(mm, dtype=dtype, count=count, offset=start + t.begin)
                tensor = view.reshape(t.shape).clone()
                del view
            if t.dtype in FLOAT_DTYPES and not bool(torch.isfinite(tensor).all()):
                raise BadInputError(f"{where}: tensor {t.name} has NaN or Inf values", "E_WEIGHTS_NONFINITE")
            out[t.name] = tensor
    return out
