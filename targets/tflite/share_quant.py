"""One copy of each quantization-parameter vector in a multi-signature ``.tflite``.

litert-torch converts every signature (``prefill_N`` ..., ``decode``) into its own subgraph. The
weight *buffers* are shared between subgraphs, but each subgraph's tensor table repeats the
tensor's ``QuantizationParameters``: a float32 ``scale`` and an int64 ``zero_point`` vector per
weight, per group for block-wise int4. With four signatures that is four copies (the demo's int4
g32 model: 1.1 MB per subgraph on a 2.6 MB weight payload, 2.6x its theoretical size).

A FlatBuffer may point many tables at one vector, and TFLite reads ``scale`` / ``zero_point``
through those offsets only, so this pass re-serialises the model (the schema's object API, as
``quant_encode`` does) with each distinct vector written once and shared. Numbers and tensor
tables are unchanged: the logits are bit-identical. Models whose buffers live outside the
FlatBuffer (> 2 GB, ``Buffer.offset``) are returned as they are.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SharedQuant:
    bytes_before: int
    bytes_after: int
    vectors: int          # quantization vectors referenced by tensors
    distinct: int         # written once each

    def to_json(self) -> dict:
        return {"bytes_before": self.bytes_before, "bytes_after": self.bytes_after, "vectors": self.vectors,
                "distinct": self.distinct}


def share_quantization_vectors(data: bytes) -> tuple[bytes, SharedQuant | None]:
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    model = s.ModelT.InitFromPackedBuf(data, 0)
    params = [t.quantization for g in model.subgraphs or [] for t in g.tensors or []
              if t.quantization is not None and _has_vectors(t.quantization)]
    if not params or any(b.offset for b in model.buffers or []):
        return data, None
    memo: dict[tuple[str, bytes], int] = {}
    for q in params:
        q.__class__ = _shared_class(s, memo)
    builder = flatbuffers.Builder(len(data) + (1 << 16))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    out = bytes(builder.Output())
    return out, SharedQuant(len(data), len(out), sum(_count(q) for q in params), len(memo))


def _has_vectors(q) -> bool:
    return any(v is not None and len(v) for v in (q.scale, q.zeroPoint))


def _count(q) -> int:
    return sum(v is not None and len(v) > 0 for v in (q.scale, q.zeroPoint))


def _shared_class(s, memo: dict):
    """A ``QuantizationParametersT`` whose ``Pack`` is the generated one except that ``scale`` /
    ``zero_point`` go through ``memo`` (content -> offset in this builder)."""

    def vector(builder, values, dtype) -> int:
        a = np.ascontiguousarray(values, dtype=dtype)
        key = (a.dtype.str, a.tobytes())
        if key not in memo:
            memo[key] = builder.CreateNumpyVector(a)
        return memo[key]

    class Shared(s.QuantizationParametersT):
        def Pack(self, builder):
            scale = vector(builder, self.scale, np.float32) if self.scale is not None else None
            zero = vector(builder, self.zeroPoint, np.int64) if self.zeroPoint is not None else None
            mn = builder.CreateNumpyVector(np.asarray(self.min, np.float32)) if self.min is not None else None
            mx = builder.CreateNumpyVector(np.asarray(self.max, np.float32)) if self.max is not None else None
            details = self.details.Pack(builder) if self.details is not None else None
            s.QuantizationParametersStart(builder)
            if mn is not None:
                s.QuantizationParametersAddMin(builder, mn)
            if mx is not None:
                s.QuantizationParametersAddMax(builder, mx)
            if scale is not None:
                s.QuantizationParametersAddScale(builder, scale)
            if zero is not None:
                s.QuantizationParametersAddZeroPoint(builder, zero)
            s.QuantizationParametersAddDetailsType(builder, self.detailsType)
            if details is not None:
                s.QuantizationParametersAddDetails(builder, details)
            s.QuantizationParametersAddQuantizedDimension(builder, self.quantizedDimension)
            return s.QuantizationParametersEnd(builder)

    return Shared
