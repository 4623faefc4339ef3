"""Benchmark: ExecuTorch's LLM custom ops (llama::custom_sdpa + llama::update_cache) vs the
decomposed attention graph (index_copy_ + matmul/softmax over the whole cache), on the demo model.

For each variant: lower the demo model to model.pte (fp32, XNNPACK), then through
``ExecuTorchAdapter`` time a full-length prefill (max_prompt tokens) and single-token decode
steps at the start and at the end of the cache; check logits against the eager reference.
Writes bench/results/executorch_custom_ops.json. Timings on a shared machine are noisy: the
medians of several repetitions are reported, both variants are interleaved per repetition.

    python bench/executorch_custom_ops.py [--reps 5] [--out-dir /tmp/et_bench]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from slmpack.config import TraceConfig
from slmpack.bundled import demo_model_dir
from slmpack.exporter import inputs
from slmpack.exporter.checkpoint import load_state_dict
from slmpack.exporter.kv_cache import CacheLayout
from slmpack.exporter.reference import build_reference
from slmpack.exporter.reference_runner import ReferenceRunner
from slmpack.exporter.spec import load_spec
from slmpack.exporter.trace import trace_programs
from slmpack.targets.executorch import lower as et_lower
from slmpack.targets.executorch.options import ExecuTorchOptions, Sdpa
from slmpack.runtime.adapters.executorch import ExecuTorchAdapter

RESULTS = Path(__file__).resolve().parent / "results" / "executorch_custom_ops.json"


def _time(fn, reps: int) -> float:
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out-dir", type=Path, default=Path("/tmp/et_bench"))
    ap.add_argument("--max-context", type=int, default=256)
    ap.add_argument("--max-prompt", type=int, default=128)
    args = ap.parse_args()
    torch.manual_seed(0)
    model_dir = demo_model_dir()
    spec = load_spec(model_dir)
    cfg = TraceConfig(max_context=args.max_context, max_prompt=args.max_prompt)
    ref = build_reference(spec, load_state_dict(model_dir, False), cfg.max_context)
    gen = inputs.generation_config(model_dir, spec)
    programs = trace_programs(ref, CacheLayout.BUFFER, cfg, export_programs=False)
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, spec.vocab_size, cfg.max_prompt, dtype=np.int64)
    reference = ReferenceRunner(ref)
    ref_logits = reference.prefill(prompt)

    variants, runners = {}, {}
    for sdpa in (Sdpa.DECOMPOSED, Sdpa.CUSTOM):
        out = args.out_dir / sdpa.value
        out.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        art = et_lower.lower(programs, spec, ExecuTorchOptions(sdpa=sdpa, bundled_program=False), out, gen)
        export_s = time.perf_counter() - t0
        runner = ExecuTorchAdapter(out / art.primary, cfg.max_prompt, cfg.max_context)
        runner.reset()
        diff = float(np.abs(runner.prefill(prompt) - ref_logits).max())
        d = art.report.details["delegation"]
        variants[sdpa.value] = {
            "export_s": round(export_s, 1), "pte_bytes": art.report.details["pte_bytes"], "max_abs_logit_diff": diff,
            "xnnpack_partitions": d["xnnpack_partitions"], "delegated_ops": d["delegated_op_count"],
            "portable_ops": d["portable_op_count"],
            "delegated_flop_share": {"prefill": d["prefill"]["delegated_flop_share"],
                                     "decode": d["decode"]["delegated_flop_share"]},
        }
        runners[sdpa.value] = runner

    timings: dict = {k: {"prefill_ms": [], "decode_first_ms": [], "decode_last_ms": [], "reset_ms": []}
                     for k in runners}
    last = cfg.max_context - 1
    for _ in range(args.reps):
        for name, r in runners.items():
            t = timings[name]
            t["reset_ms"].append(1e3 * _time(r.reset, 1))
            t["prefill_ms"].append(1e3 * _time(lambda: r.prefill(prompt), 1))
            r.reset()
            r.prefill(prompt[:1])
            t["decode_first_ms"].append(1e3 * _time(lambda: (r.decode(7, r.pos)), 8) )
            r.pos = last   # positions before `last` are never read again by this step's attention mask
            t["decode_last_ms"].append(1e3 * _time(lambda: (r.decode(7, last), setattr(r, "pos", last)), 8))
    for name, t in timings.items():
        v = variants[name]
        for key, vals in t.items():
            v[key] = round(statistics.median(vals), 3)
        v["prefill_tokens_per_s"] = round(cfg.max_prompt / (v["prefill_ms"] / 1e3), 1)
        v["decode_tokens_per_s_last_pos"] = round(1e3 / v["decode_last_ms"], 1)
    c, d = variants["custom"], variants["decomposed"]
    result = {
        "model": "slmpack/demo_model", "num_parameters": spec.num_parameters,
        "max_context": cfg.max_context, "max_prompt": cfg.max_prompt, "reps": args.reps,
        "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count(),
                    "note": "shared 2-core VM under load from other jobs; compare ratios, not absolutes"},
        "variants": variants,
        "speedup_custom_over_decomposed": {
            "prefill": round(d["prefill_ms"] / c["prefill_ms"], 2),
            "decode_first": round(d["decode_first_ms"] / c["decode_first_ms"], 2),
            "decode_last": round(d["decode_last_ms"] / c["decode_last_ms"], 2)},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(json.dumps(result, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
