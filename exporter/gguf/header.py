"""A bounded structural walk of a GGUF header, before ``gguf.GGUFReader`` touches the file.

GGUFReader trusts the counts it reads: an array of 2^60 scalars past the end of the file makes it
loop (every read past EOF is an empty array, not an error), nested arrays recurse without limit,
and a tensor's dims are multiplied in uint64 (wrapping). This walk reads the same layout
(little-endian GGUF v2/v3: magic, version, tensor and key/value counts, key/values, tensor infos,
aligned data) with every length checked against the bytes that remain and against fixed caps, and
every tensor checked: 1..4 dims, each >= 1, a supported type, rows whole blocks, data aligned,
inside the file and not overlapping another tensor. Nothing is followed outside the file.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

from slmpack.errors import BadInputError, UnsupportedError

MAGIC = b"GGUF"
VERSIONS = (2, 3)
MAX_COUNT = 1 << 16             # key/values, tensors
MAX_ARRAY = 1 << 22             # elements of one metadata array (vocabularies are ~10^5)
MAX_ARRAY_TOTAL = 1 << 23       # elements of all metadata arrays
MAX_STRING = 64 << 20           # one string (a chat template, a key)
MAX_ELEMENTS = 1 << 40          # one tensor
DEFAULT_ALIGNMENT = 32
SUPPORTED_TYPES = (GGMLQuantizationType.F32, GGMLQuantizationType.F16, GGMLQuantizationType.BF16,
                   GGMLQuantizationType.Q8_0, GGMLQuantizationType.Q4_0, GGMLQuantizationType.Q4_1,
                   GGMLQuantizationType.Q4_K, GGMLQuantizationType.Q6_K)
_SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
STRING, ARRAY = 8, 9


def invalid(where: str, why: str) -> BadInputError:
    return BadInputError(f"{where}: not a valid GGUF file ({why})", "E_GGUF_INVALID")


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as the header states it: ``shape`` in row-major (numpy / Hugging Face) order,
    i.e. GGUF's ``ne`` reversed; ``offset`` absolute in the file."""

    name: str
    qtype: GGMLQuantizationType
    shape: tuple[int, ...]
    offset: int
    n_bytes: int


class _Cursor:
    def __init__(self, buf, where: str):
        self.buf, self.pos, self.where, self.array_total = buf, 0, where, 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.buf):
            raise invalid(self.where, f"truncated: needs {n} bytes at offset {self.pos}, the file has "
                                      f"{len(self.buf)}")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return bytes(out)

    def unpack(self, fmt: str):
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))[0]

    def string(self) -> bytes:
        n = self.unpack("Q")
        if n > min(MAX_STRING, len(self.buf) - self.pos):
            raise invalid(self.where, f"a string of {n} bytes at offset {self.pos}")
        return self.take(n)

    def value(self, vtype: int, nested: bool = False) -> object:
        if vtype in _SCALAR:
            return self.unpack(_SCALAR[vtype])
        if vtype == STRING:
            return self.string()
        if vtype != ARRAY:
            raise invalid(self.where, f"unknown metadata value type {vtype}")
        if nested:
            raise UnsupportedError(f"{self.where}: nested metadata arrays are not read", "E_GGUF_UNSUPPORTED")
        etype, count = self.unpack("I"), self.unpack("Q")
        least = struct.calcsize("<" + _SCALAR[etype]) if etype in _SCALAR else 8
        self.array_total += count
        if count > MAX_ARRAY or self.array_total > MAX_ARRAY_TOTAL or count * least > len(self.buf) - self.pos:
            raise invalid(self.where, f"a metadata array of {count} elements at offset {self.pos}")
        if etype in _SCALAR:  # skipped whole: GGUFReader reads the values
            self.take(count * least)
            return None
        for _ in range(count):
            self.value(etype, nested=True)
        return None


def _qtype(raw: int, name: str, where: str) -> GGMLQuantizationType:
    try:
        t = GGMLQuantizationType(raw)
    except ValueError:
        raise UnsupportedError(f"{where}: tensor {name} has unknown type id {raw}", "E_GGUF_UNSUPPORTED",
                               details={"tensor": name, "type": raw}) from None
    if t not in SUPPORTED_TYPES:
        raise UnsupportedError(f"{where}: tensor {name} is {t.name}; slmpack reads "
                               f"{', '.join(s.name for s in SUPPORTED_TYPES)}", "E_GGUF_UNSUPPORTED",
                               details={"tensor": name, "type": t.name})
    return t


def scan(buf, where: str) -> tuple[TensorInfo, ...]:
    """Walk the header of ``buf`` (the whole file, e.g. an mmap); raise a typed error for anything
    out of bounds; return the tensor infos."""
    c = _Cursor(buf, where)
    if len(buf) < 24 or c.take(4) != MAGIC:
        raise invalid(where, "bad magic: the file does not start with 'GGUF'")
    version = c.unpack("I")
    if version & 0xFFFF == 0 and version:
        raise UnsupportedError(f"{where}: big-endian GGUF files are not read", "E_GGUF_UNSUPPORTED")
    if version not in VERSIONS:
        raise UnsupportedError(f"{where}: GGUF version {version} (reads {VERSIONS})", "E_GGUF_UNSUPPORTED")
    n_tensors, n_kv = c.unpack("Q"), c.unpack("Q")
    if n_tensors > MAX_COUNT or n_kv > MAX_COUNT:
        raise invalid(where, f"{n_tensors} tensors and {n_kv} key/values (at most {MAX_COUNT} each)")
    alignment = DEFAULT_ALIGNMENT
    for _ in range(n_kv):
        key = c.string()
        vtype = c.unpack("I")
        val = c.value(vtype)
        if key == b"general.alignment":
            if vtype != 4 or not val or val & (val - 1):
                raise invalid(where, f"general.alignment {val!r} is not a power of two (uint32)")
            alignment = val
    infos = []
    for _ in range(n_tensors):
        raw_name = c.string()
        try:
            name = raw_name.decode("utf-8")
        except UnicodeDecodeError:
            raise invalid(where, f"a tensor name is not UTF-8 ({raw_name[:40]!r})") from None
        n_dims = c.unpack("I")
        if not 1 <= n_dims <= 4:
            raise invalid(where, f"tensor {name} has {n_dims} dims (1..4)")
        ne = [c.unpack("Q") for _ in range(n_dims)]
        qtype = _qtype(c.unpack("I"), name, where)
        offset = c.unpack("Q")
        elements = 1
        for d in ne:
            elements *= d
        if min(ne) < 1 or elements > MAX_ELEMENTS:
            raise invalid(where, f"tensor {name} has dims {ne}")
        block, size = GGML_QUANT_SIZES[qtype]
        if ne[0] % block:
            raise invalid(where, f"tensor {name}: rows of {ne[0]} are not whole {qtype.name} blocks of {block}")
        infos.append((name, qtype, tuple(reversed(ne)), offset, elements // block * size))
    data_start = -(-c.pos // alignment) * alignment
    out, end = [], 0
    for name, qtype, shape, offset, n_bytes in sorted(infos, key=lambda t: t[3]):
        if offset % alignment or offset < end or data_start + offset + n_bytes > len(buf):
            raise invalid(where, f"tensor {name}: data at offset {offset} ({n_bytes} bytes) is unaligned, "
                                 "overlaps another tensor or ends past the end of the file")
        end = offset + n_bytes
        out.append(TensorInfo(name, qtype, shape, data_start + offset, n_bytes))
    if len({t.name for t in out}) != len(out):
        raise invalid(where, "two tensors have the same name")
    return tuple(sorted(out, key=lambda t: t.name))
