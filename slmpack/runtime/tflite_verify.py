"""Structural verifier for TFLite flatbuffers, in pure Python, run before any native code sees them.

LiteRT's own flatbuffers verifier is only reachable from Python by *loading* the model
(``Interpreter(model_content=...)`` verifies and raises ``ValueError``). We never hand
unverified bytes to native code, so this module walks the buffer itself with a bounds check
on every read, following ``schema.fbs`` (field slots as in ``ai_edge_litert.schema_py_generated``),
and then checks what the flatbuffers verifier cannot: every tensor, buffer, opcode, subgraph and
signature reference is in range, constant data sizes match tensor shapes, composite
decompositions point at real subgraphs. ``verify_bytes`` returns a ``ModelSummary`` or raises
``ArtifactInvalid`` (a ``BadInputError``) naming the first problem found.
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field

from .errors import BadInputError

IDENTIFIER = b"TFL3"
SCHEMA_VERSION = 3
STABLEHLO_COMPOSITE = 206      # BuiltinOperator.STABLEHLO_COMPOSITE
CUSTOM = 32                    # BuiltinOperator.CUSTOM
PLACEHOLDER_FOR_GREATER_OP_CODES = 127
MAX_TENSOR_TYPE = 22           # TensorType.FLOAT8_E5M2 (highest value in the ai-edge-litert 2.3 schema)
# bits per element of fixed-size tensor types (STRING, RESOURCE, VARIANT are variable: unchecked)
_TYPE_BITS = {0: 32, 1: 16, 2: 32, 3: 8, 4: 64, 6: 8, 7: 16, 8: 64, 9: 8, 10: 64, 11: 128, 12: 64,
              15: 32, 16: 16, 17: 4, 18: 16, 19: 2, 20: 4, 21: 8, 22: 8}


class ArtifactInvalid(BadInputError):
    """The .tflite bytes are not a well-formed LiteRT model."""

    default_code = "E_TFLITE_INVALID"


@dataclass
class OpInfo:
    subgraph: int
    index: int
    opcode: int           # builtin code (max of deprecated and extended field)
    custom_code: str      # "" for builtins
    outputs: list[str]    # output tensor names (carry the source module path)
    composite: str = ""   # StableHLO composite name, if any


@dataclass
class Signature:
    key: str
    subgraph: int
    inputs: dict[str, dict]    # name -> {"shape": [...], "dtype": int}
    outputs: dict[str, dict]


@dataclass
class ModelSummary:
    size: int
    opcodes: list[tuple[int, str]]
    ops: list[OpInfo] = field(default_factory=list)
    signatures: dict[str, Signature] = field(default_factory=dict)
    subgraph_names: list[str] = field(default_factory=list)
    metadata: dict[str, int] = field(default_factory=dict)   # name -> buffer index
    description: str = ""


class _Reader:
    def __init__(self, data: bytes):
        self.b = memoryview(data)
        self.n = len(data)

    def _need(self, pos: int, size: int, what: str) -> None:
        if pos < 0 or size < 0 or pos + size > self.n:
            raise ArtifactInvalid(f"flatbuffer: {what} at byte {pos} (+{size}) is outside the "
                                  f"{self.n}-byte buffer", details={"offset": pos})

    def scalar(self, fmt: str, pos: int, what: str):
        size = struct.calcsize(fmt)
        self._need(pos, size, what)
        return struct.unpack_from("<" + fmt, self.b, pos)[0]


class _Table:
    """One flatbuffer table with bounds-checked field access (slot = field index in the schema)."""

    def __init__(self, r: _Reader, pos: int, what: str):
        self.r, self.pos, self.what = r, pos, what
        soff = r.scalar("i", pos, f"{what} table")
        self.vt = pos - soff
        self.vt_size = r.scalar("H", self.vt, f"{what} vtable")
        self.obj_size = r.scalar("H", self.vt + 2, f"{what} vtable")
        if self.vt_size < 4 or self.vt_size % 2:
            raise ArtifactInvalid(f"flatbuffer: {what} has a malformed vtable (size {self.vt_size})")
        r._need(self.vt, self.vt_size, f"{what} vtable")
        r._need(pos, self.obj_size, f"{what} table body")

    def _off(self, slot: int) -> int:
        voff = 4 + 2 * slot
        if voff >= self.vt_size:
            return 0
        off = self.r.scalar("H", self.vt + voff, f"{self.what} vtable entry")
        if off and off >= self.obj_size:
            raise ArtifactInvalid(f"flatbuffer: {self.what} field {slot} lies outside its table")
        return off

    def scalar(self, slot: int, fmt: str, default=0):
        off = self._off(slot)
        return default if not off else self.r.scalar(fmt, self.pos + off, f"{self.what} field {slot}")

    def _indirect(self, slot: int) -> int | None:
        off = self._off(slot)
        if not off:
            return None
        p = self.pos + off
        return p + self.r.scalar("I", p, f"{self.what} field {slot}")

    def table(self, slot: int, what: str) -> _Table | None:
        p = self._indirect(slot)
        return None if p is None else _Table(self.r, p, what)

    def vector(self, slot: int, elem_size: int, what: str) -> tuple[int, int]:
        """(first element position, length); (0, 0) if absent."""
        p = self._indirect(slot)
        if p is None:
            return 0, 0
        length = self.r.scalar("I", p, f"{what} length")
        self.r._need(p + 4, length * elem_size, what)
        return p + 4, length

    def ints(self, slot: int, fmt: str, what: str) -> list[int]:
        start, n = self.vector(slot, struct.calcsize(fmt), what)
        return list(struct.unpack_from(f"<{n}{fmt}", self.r.b, start)) if n else []

    def string(self, slot: int, what: str) -> str:
        start, n = self.vector(slot, 1, what)
        if not start:
            return ""
        self.r._need(start + n, 1, f"{what} terminator")
        if self.r.b[start + n] != 0:
            raise ArtifactInvalid(f"flatbuffer: {what} is not NUL-terminated")
        return bytes(self.r.b[start:start + n]).decode("utf-8", errors="replace")

    def tables(self, slot: int, what: str) -> list[_Table]:
        start, n = self.vector(slot, 4, what)
        out = []
        for i in range(n):
            e = start + 4 * i
            out.append(_Table(self.r, e + self.r.scalar("I", e, what), f"{what}[{i}]"))
        return out


def verify_bytes(data: bytes) -> ModelSummary:
    """Verify a whole .tflite model; raise ArtifactInvalid naming the first problem."""
    if len(data) < 8:
        raise ArtifactInvalid(f"flatbuffer: {len(data)} bytes is too short to be a model")
    if bytes(data[4:8]) != IDENTIFIER:
        raise ArtifactInvalid(f"flatbuffer: file identifier {bytes(data[4:8])!r} is not {IDENTIFIER!r}")
    r = _Reader(data)
    model = _Table(r, r.scalar("I", 0, "root offset"), "Model")
    version = model.scalar(0, "I")
    if version != SCHEMA_VERSION:
        raise ArtifactInvalid(f"model schema version {version} (this verifier reads {SCHEMA_VERSION})")
    summary = ModelSummary(size=len(data), opcodes=[], description=model.string(3, "description"))

    for i, oc in enumerate(model.tables(1, "operator_codes")):
        code = max(oc.scalar(0, "b"), oc.scalar(3, "i"))
        if oc.scalar(0, "b") == PLACEHOLDER_FOR_GREATER_OP_CODES:
            code = oc.scalar(3, "i")
        summary.opcodes.append((code, oc.string(1, f"operator_codes[{i}].custom_code")))

    buffers = []
    for i, b in enumerate(model.tables(4, "buffers")):
        _, n = b.vector(0, 1, f"buffers[{i}].data")
        offset, size = b.scalar(1, "Q"), b.scalar(2, "Q")
        if offset > 1 and offset + size > len(data):
            raise ArtifactInvalid(f"buffers[{i}] points at bytes {offset}..{offset + size}, past the end of "
                                  f"the {len(data)}-byte file (truncated?)", details={"buffer": i})
        buffers.append(n if offset <= 1 else size)
    if model.vector(8, 4, "external_buffer_groups")[1] or model.vector(9, 4, "external_buffers")[1]:
        raise ArtifactInvalid("model references external buffers (packages must be self-contained)")

    subgraphs = model.tables(2, "subgraphs")
    sub_tensors: dict[int, list[_Table]] = {}
    for gi, g in enumerate(subgraphs):
        summary.subgraph_names.append(g.string(4, f"subgraphs[{gi}].name"))
        tensors = g.tables(0, f"subgraphs[{gi}].tensors")
        names = []
        for ti, t in enumerate(tensors):
            where = f"subgraphs[{gi}].tensors[{ti}]"
            shape = t.ints(0, "i", f"{where}.shape")
            ttype = t.scalar(1, "b")
            buf = t.scalar(2, "I")
            names.append(t.string(3, f"{where}.name"))
            if not 0 <= ttype <= MAX_TENSOR_TYPE:
                raise ArtifactInvalid(f"{where} ({names[-1]}) has unknown type {ttype}")
            if buf >= len(buffers):
                raise ArtifactInvalid(f"{where} ({names[-1]}) references buffer {buf} of {len(buffers)}")
            t.table(4, f"{where}.quantization")
            nbytes, bits = buffers[buf], _TYPE_BITS.get(ttype)
            if buf and nbytes and bits and all(d >= 0 for d in shape):
                want = math.ceil(math.prod(shape) * bits / 8)
                if nbytes != want:
                    raise ArtifactInvalid(f"{where} ({names[-1]}) shape {shape} needs {want} bytes, its buffer "
                                          f"holds {nbytes}")
        sub_tensors[gi] = tensors

        def check_idx(idx: list[int], what: str, optional: bool = False) -> None:
            for x in idx:
                if not (0 <= x < len(tensors) or (optional and x == -1)):
                    raise ArtifactInvalid(f"subgraphs[{gi}] {what} references tensor {x} of {len(tensors)}")

        check_idx(g.ints(1, "i", "subgraph inputs"), "inputs")
        check_idx(g.ints(2, "i", "subgraph outputs"), "outputs")
        for oi, op in enumerate(g.tables(3, f"subgraphs[{gi}].operators")):
            where = f"subgraphs[{gi}].operators[{oi}]"
            idx = op.scalar(0, "I")
            if idx >= len(summary.opcodes):
                raise ArtifactInvalid(f"{where} uses opcode {idx} of {len(summary.opcodes)}")
            ins, outs = op.ints(1, "i", f"{where}.inputs"), op.ints(2, "i", f"{where}.outputs")
            check_idx(ins, f"operator {oi} inputs", optional=True)
            check_idx(outs, f"operator {oi} outputs", optional=True)
            op.vector(5, 1, f"{where}.custom_options")
            op.table(4, f"{where}.builtin_options")
            code, custom = summary.opcodes[idx]
            info = OpInfo(gi, oi, code, custom, [names[o] for o in outs if o >= 0])
            if code == STABLEHLO_COMPOSITE:
                opts = op.table(12, f"{where}.builtin_options_2")
                if opts is None:
                    raise ArtifactInvalid(f"{where} is a composite without options")
                info.composite = opts.string(0, f"{where} composite name")
                dec = opts.scalar(1, "i")
                if not 0 <= dec < len(subgraphs):
                    raise ArtifactInvalid(f"{where} composite {info.composite} decomposes into subgraph {dec} "
                                          f"of {len(subgraphs)}")
            summary.ops.append(info)
        summary.subgraph_names[-1] = summary.subgraph_names[-1] or f"subgraph_{gi}"

    for i, md in enumerate(model.tables(6, "metadata")):
        name, buf = md.string(0, f"metadata[{i}].name"), md.scalar(1, "I")
        if buf >= len(buffers):
            raise ArtifactInvalid(f"metadata {name!r} references buffer {buf} of {len(buffers)}")
        summary.metadata[name] = buf

    for si, sd in enumerate(model.tables(7, "signature_defs")):
        key = sd.string(2, f"signature_defs[{si}].signature_key")
        sub = sd.scalar(4, "I")
        if sub >= len(subgraphs):
            raise ArtifactInvalid(f"signature {key!r} points at subgraph {sub} of {len(subgraphs)}")
        tensors = sub_tensors[sub]
        maps = {}
        for slot, kind in ((0, "inputs"), (1, "outputs")):
            maps[kind] = {}
            for tm in sd.tables(slot, f"signature {key} {kind}"):
                name, ti = tm.string(0, f"signature {key} {kind} name"), tm.scalar(1, "I")
                if ti >= len(tensors):
                    raise ArtifactInvalid(f"signature {key!r} {kind[:-1]} {name!r} references tensor {ti} of "
                                          f"{len(tensors)}")
                t = tensors[ti]
                maps[kind][name] = {"shape": t.ints(0, "i", "shape"), "dtype": t.scalar(1, "b")}
        if key in summary.signatures:
            raise ArtifactInvalid(f"signature {key!r} is defined twice")
        summary.signatures[key] = Signature(key, sub, maps["inputs"], maps["outputs"])
    return summary
