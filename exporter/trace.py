"""torch.export of the reference module into the programs targets consume.

``trace_programs(ref, layout, cfg)`` returns a ``TracedPrograms`` holding the wrapper module
(for converters that trace themselves from sample args, e.g. litert-torch), the example inputs
and dynamic shapes, and the ``prefill`` / ``decode`` ExportedPrograms:

* IO_CONCAT: one graph, dynamic prompt length and dynamic past length; the same
  ExportedProgram serves prefill (past = 0) and decode (S = 1), as ONNX Runtime GenAI runs it.
* BUFFER / IO_STATIC: ``prefill`` with dynamic prompt length 1..max_prompt, ``decode`` with one
  token at an explicit position, both over one fixed-size cache of ``max_context`` positions.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch.export import Dim, ExportedProgram, export

from slmpack.config import TraceConfig
from slmpack.errors import ToolchainError
from slmpack.exporter.kv_cache import CacheLayout, CacheUpdate
from slmpack.exporter.programs import BufferProgram, IOConcatProgram, StaticIOProgram
from slmpack.exporter.reference import ReferenceModel


@dataclass
class TracedPrograms:
    layout: CacheLayout
    module: torch.nn.Module
    prefill: ExportedProgram | None
    decode: ExportedProgram | None
    prefill_args: tuple
    decode_args: tuple
    prefill_dynamic_shapes: Any = None
    config: TraceConfig = field(default_factory=TraceConfig)


def _cache_tensors(ref: ReferenceModel, length: int) -> tuple:
    s = ref.spec
    return tuple(torch.zeros(1, s.num_kv_heads, length, s.head_dim) for _ in range(2 * s.num_layers))


def example_inputs(ref: ReferenceModel, layout: CacheLayout, cfg: TraceConfig, seq: int, start: int):
    ids = torch.zeros(1, seq, dtype=torch.long)
    pos = torch.arange(start, start + seq, dtype=torch.long)
    if layout is CacheLayout.IO_CONCAT:
        return (ids, torch.ones(1, start + seq, dtype=torch.long), pos[None], *_cache_tensors(ref, start))
    if layout is CacheLayout.BUFFER:
        return (ids, pos)
    return (ids, pos, *_cache_tensors(ref, cfg.max_context))


def _export(module, args, dynamic_shapes, what: str) -> ExportedProgram:
    try:
        with torch.no_grad():
            return export(module, args, dynamic_shapes=dynamic_shapes, strict=False)
    except Exception as e:  # torch.export raises many types; report one line, keep the cause
        raise ToolchainError(f"torch.export of {what} failed: {type(e).__name__}: {str(e).splitlines()[0]}",
                             "E_TRACE") from e


def trace_programs(ref: ReferenceModel, layout: CacheLayout, cfg: TraceConfig,
                   export_programs: bool = True, update: CacheUpdate = CacheUpdate.INDEX_COPY) -> TracedPrograms:
    if layout is CacheLayout.IO_CONCAT:
        module = IOConcatProgram(ref).eval()
        # Named Dims would force spelling out total = past + seq, which torch.export cannot
        # express across two dims; Dim.AUTO lets export derive that relation from the graph.
        a = Dim.AUTO
        args = example_inputs(ref, layout, cfg, seq=3, start=5)
        dyn = ({1: a}, {1: a}, {1: a}, tuple({2: a} for _ in args[3:]))
        ep = _export(module, args, dyn, "the decoder (io_concat)") if export_programs else None
        return TracedPrograms(layout, module, ep, ep, args, args, dyn, cfg)

    module = (BufferProgram(ref, cfg.max_context, update=update) if layout is CacheLayout.BUFFER
              else StaticIOProgram(ref, update=update)).eval()
    pre_args = example_inputs(ref, layout, cfg, seq=min(3, cfg.max_prompt), start=0)
    dec_args = example_inputs(ref, layout, cfg, seq=1, start=0)
    seq = Dim("seq", min=1, max=cfg.max_prompt)
    # forward(tokens, input_pos, *caches): torch.export sees *caches as one tuple argument
    extra = (tuple(None for _ in pre_args[2:]),) if len(pre_args) > 2 else ()
    pre_dyn = ({1: seq}, {0: seq}, *extra)
    if cfg.max_prompt == 1:
        pre_dyn = None
    prefill = decode = None
    if export_programs:
        prefill = _export(module, pre_args, pre_dyn, "prefill")
        if isinstance(module, BufferProgram):  # tracing mutated nothing, but keep the caches pristine
            for bufs in module.caches():          # (only the caches: module.buffers() includes the
                for b in bufs:                    # reference's RoPE tables)
                    b.zero_()
        decode = _export(module, dec_args, None, "decode")
    return TracedPrograms(layout, module, prefill, decode, pre_args, dec_args, pre_dyn, cfg)

