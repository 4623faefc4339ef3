"""FX fusion counts on a model's traced programs, per cache layout (``python -m bench.perf.fusion_counts``).

Not a benchmark of speed: it shows what exporter/passes finds in a real checkpoint and that the
fused program computes the same logits (max |diff| against the unfused program)."""
from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch

from slmpack.config import TraceConfig
from slmpack.exporter.checkpoint import load_state_dict
from slmpack.exporter.kv_cache import CacheLayout
from slmpack.exporter.passes import ops, run_fusions
from slmpack.exporter.passes._testing import max_diff, reset_buffers, run, sample_args
from slmpack.exporter.reference import build_reference
from slmpack.exporter.spec import load_spec
from slmpack.exporter.trace import _export, trace_programs


def counts(model_dir: Path, layouts=(CacheLayout.IO_CONCAT, CacheLayout.BUFFER)) -> dict:
    spec = load_spec(model_dir)
    ref = build_reference(spec, load_state_dict(model_dir, False), 64)
    out = {}
    for layout in layouts:
        tp = trace_programs(ref, layout, TraceConfig(max_context=64, max_prompt=16), export_programs=False)
        ep = _export(tp.module, tp.prefill_args, tp.prefill_dynamic_shapes, "prefill")
        args = sample_args(tp, seq=6, past=4)
        reset_buffers(ep)
        before = run(ep, args)
        fused = copy.deepcopy(ep)
        res = run_fusions(fused)
        reset_buffers(fused)
        with torch.no_grad():
            diff = max_diff(before, run(fused, args))
        out[layout.value] = {"passes": {k: r.to_json() for k, r in res.items()},
                             "slmpack_ops": ops.count(fused.graph_module), "max_abs_diff": diff}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir", nargs="?", type=Path, default=None)
    a = ap.parse_args()
    from bench.perf.models import demo_dir
    print(json.dumps(counts(a.model_dir or demo_dir()), indent=1))


if __name__ == "__main__":
    main()
