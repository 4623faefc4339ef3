"""Context 256 vs 4096, side by side in one run: per target, the export (wall time, peak RSS, with
the validation ladder, as a user runs it), the package size, and the runtime (memory after load
and after a long prefill, decode tok/s near the end of the context: at positions 3000..3031 for
4096, 200..231 for 256). Each runtime runs in its own process (worker.py).

    python -m bench.perf.context [--model DIR] [--targets onnx tflite executorch] [--threads 1]

Default model: the bundled demo. Writes bench/results/context-<date>.json.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import tempfile
from pathlib import Path

from bench.perf.procs import Worker, measured, thread_env

ROOT = Path(__file__).resolve().parents[2]
CONTEXTS = (256, 4096)
DECODE = 32


def decode_start(context: int) -> int:
    return 3000 if context >= 4096 else context - DECODE - 24


def one(model: Path | None, target: str, context: int, threads: int, work: Path) -> dict:
    out = work / f"{target}-{context}"
    cmd = [sys.executable, "-m", "slmpack.cli", "export", *([str(model)] if model else []), "--target", target,
           "--out", str(out), "--max-context", str(context), "--force", "--json"]
    exp = measured(cmd, env=thread_env(threads))
    row = {"target": target, "context": context, "export_s": exp["seconds"], "export_peak_rss_mb": exp["peak_rss_mb"],
           "export_rc": exp["rc"]}
    if exp["rc"] != 0:
        return {**row, "error": exp["tail"][-600:]}
    manifest = json.loads((out / "manifest.json").read_text())
    row["package_mb"] = round(sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**20, 2)
    row["kv_cache_mb"] = round(manifest["kv_cache"].get("bytes", 0) / 2**20, 2)
    vocab = manifest["model"]["vocab_size"]
    w = Worker(f"{target}-{context}", sys.executable, f"target:{target}", out, threads, vocab)
    try:
        loaded = w.ask(cmd="mem")
        start = decode_start(context)
        res = w.ask(cmd="bench", prompt=start, decode=DECODE, seed=0)
        after = w.ask(cmd="mem")
    finally:
        w.close()
    return {**row, "runtime_rss_loaded_mb": round(loaded["vmrss_kb"] / 1024, 1),
            "runtime_peak_rss_mb": round(after["vmhwm_kb"] / 1024, 1),
            "decode_positions": [start, start + DECODE - 1], "prefill_s": round(res["prefill_s"], 3),
            "decode_tok_s": round(DECODE / res["decode_s"], 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="HF model directory (default: the bundled demo)")
    ap.add_argument("--targets", nargs="+", default=["onnx", "tflite", "executorch"])
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="slmpack-context-") as work:
        for target in a.targets:           # the two contexts of one target back to back (same machine state)
            for context in CONTEXTS:
                rows.append(one(a.model, target, context, a.threads, Path(work)))
                print(json.dumps(rows[-1]), flush=True)
    doc = {"date": datetime.date.today().isoformat(), "machine": platform.processor() or platform.machine(),
           "cpus": len(__import__("os").sched_getaffinity(0)), "threads": a.threads,
           "model": str(a.model) if a.model else "bundled demo (3.9M)", "rows": rows}
    path = ROOT / "bench" / "results" / f"context-{doc['date']}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(path)


if __name__ == "__main__":
    main()
