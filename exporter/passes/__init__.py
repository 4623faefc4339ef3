"""FX fusion passes over torch.export programs (one pass per file, pattern / check / rewrite).

  fuse_qkv        q/k/v projections -> one linear + split              (plain aten)
  fuse_gate_up    gate/up projections -> one linear + split            (plain aten)
  fuse_rms_norm   RMSNorm -> slmpack::rms_norm
  fuse_rope       rotary embedding -> slmpack::rope
  fuse_attention  KV-cache update + attention -> slmpack::attention[_inplace]

The slmpack ops (``ops.py``) carry their decomposition as their only kernel, so a target that
does not know them still works (``ep.run_decompositions()``), and one that does can keep them.
``run_fusions(ep, names)`` applies passes in the order given and returns their results.

Why the ExportedProgram (aten IR) and not the module's FX graph: it is what every target receives
(``TracedPrograms``), with one canonical op set per cache layout; the reference module itself does
not symbolic-trace (cache objects, data-dependent shapes). Who consumes what: the ONNX target fuses
at the ONNX level instead (targets/onnx/fusions: ORT contrib ops need ONNX-level shapes and the
GenAI I/O, and merging q/k/v weights here would rename the tensors a QuantPlan is keyed by);
ExecuTorch / Core ML / LiteRT can map the slmpack ops to their own fused kernels or let them
decompose.
"""
from __future__ import annotations

from slmpack.exporter.passes.base import FxFusion, PassResult
from slmpack.exporter.passes.fuse_attention import fuse_attention
from slmpack.exporter.passes.fuse_gate_up import fuse_gate_up
from slmpack.exporter.passes.fuse_qkv import fuse_qkv
from slmpack.exporter.passes.fuse_rms_norm import fuse_rms_norm
from slmpack.exporter.passes.fuse_rope import fuse_rope

# every pass, in the order they compose (weights first, then norms, rope, attention)
FX_FUSIONS: dict[str, FxFusion] = {
    p.name: p for p in (fuse_qkv, fuse_gate_up, fuse_rms_norm, fuse_rope, fuse_attention)
}


def run_fusions(ep, names=tuple(FX_FUSIONS)) -> dict[str, PassResult]:
    """Apply the named passes to ``ep`` in place, in the order given."""
    unknown = [n for n in names if n not in FX_FUSIONS]
    if unknown:
        raise ValueError(f"unknown FX fusion pass(es): {', '.join(unknown)}")
    return {n: FX_FUSIONS[n](ep) for n in names}


__all__ = ["FX_FUSIONS", "FxFusion", "PassResult", "run_fusions"]
