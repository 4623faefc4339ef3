"""Helpers for the tests beside each pass: a tiny random reference model, traced per cache
layout, and a runner comparing a program before and after a pass."""
from __future__ import annotations

import copy
import functools

import torch

from slmpack.config import TraceConfig
from slmpack.exporter.kv_cache import CacheLayout
from slmpack.exporter.spec import Family, ModelSpec, RopeSpec
from slmpack.exporter.reference import ReferenceModel
from slmpack.exporter.trace import _export, trace_programs

LAYERS = 2


def tiny_spec(layers: int = LAYERS, heads: int = 4, kv_heads: int = 2, bias: bool = False) -> ModelSpec:
    return ModelSpec(family=Family.LLAMA, vocab_size=64, hidden_size=32, intermediate_size=48,
                     num_layers=layers, num_heads=heads, num_kv_heads=kv_heads, head_dim=8,
                     rms_norm_eps=1e-5, rope=RopeSpec(theta=10000.0), max_position_embeddings=64,
                     tie_word_embeddings=True, attention_bias=bias)


def tiny_reference(spec: ModelSpec | None = None, max_context: int = 32, seed: int = 0) -> ReferenceModel:
    spec = spec or tiny_spec()
    torch.manual_seed(seed)
    ref = ReferenceModel(spec, max_context).eval()
    with torch.no_grad():
        for name, p in ref.named_parameters():  # non-trivial norms/biases so equality can fail
            if "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
            else:
                p.copy_(0.2 * torch.randn_like(p))
            p.requires_grad_(False)
    return ref


@functools.lru_cache(maxsize=None)
def _traced(layout: CacheLayout, spec: ModelSpec | None, max_context: int):
    """Trace once per (layout, spec) and session: torch.export is the slow part of these tests."""
    ref = tiny_reference(spec, max_context)
    tp = trace_programs(ref, layout, TraceConfig(max_context=max_context, max_prompt=8), export_programs=False)
    tp.prefill = _export(tp.module, tp.prefill_args, tp.prefill_dynamic_shapes, "prefill")
    return tp


def program(layout: CacheLayout, spec: ModelSpec | None = None, max_context: int = 32):
    """(ExportedProgram to rewrite (a private copy), sample inputs) for a tiny model."""
    tp = _traced(layout, spec, max_context)
    return copy.deepcopy(tp.prefill), sample_args(tp)


def sample_args(tp, seq: int = 5, past: int = 3, seed: int = 1) -> tuple:
    """Inputs with non-zero caches, for the program's layout (prefill-shaped)."""
    g = torch.Generator().manual_seed(seed)
    spec = tp.module.ref.spec
    ids = torch.randint(0, spec.vocab_size, (1, seq), generator=g)
    shape = lambda n: (1, spec.num_kv_heads, n, spec.head_dim)  # noqa: E731
    if tp.layout is CacheLayout.IO_CONCAT:
        caches = tuple(torch.randn(shape(past), generator=g) for _ in range(2 * spec.num_layers))
        pos = torch.arange(past, past + seq)[None]
        return (ids, torch.ones(1, past + seq, dtype=torch.long), pos, *caches)
    pos = torch.arange(past, past + seq)
    if tp.layout is CacheLayout.IO_STATIC:
        n = tp.config.max_context
        caches = tuple(torch.randn(shape(n), generator=g) for _ in range(2 * spec.num_layers))
        return (ids, pos, *caches)
    return (ids, pos)


def run(ep, args) -> list[torch.Tensor]:
    """Outputs of the program (for mutable-buffer programs, the logits then every cache)."""
    mod = ep.module()
    with torch.no_grad():
        out = mod(*args)
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    bufs = [b.clone() for name, b in sorted(mod.named_buffers()) if "cache" in name]
    return outs + bufs


def reset_buffers(ep, seed: int = 2) -> None:
    """Refill the mutable KV-cache buffers (the only 4-D state) with the same random numbers."""
    g = torch.Generator().manual_seed(seed)
    for name in sorted(ep.constants):
        t = ep.constants[name]
        if isinstance(t, torch.Tensor) and t.dim() == 4:
            t.copy_(torch.randn(t.shape, generator=g))


def max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    assert len(a) == len(b)
    return max(float((x - y).abs().max()) for x, y in zip(a, b))
