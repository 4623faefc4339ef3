"""Fuzz every parser for N executions each (default 100k) and write bench/results/fuzz-<date>.json.

Not run in CI. Needs atheris (``pip install atheris==3.0.0``; the newest with a cp311 wheel).
Usage: ``python -m bench.fuzz.run [--runs N]``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

from bench.fuzz.harness import TARGETS

ROOT = Path(__file__).resolve().parents[2]


def run(target: str, runs: int) -> dict:
    t0 = time.time()
    p = subprocess.run([sys.executable, "-m", "bench.fuzz.harness", target, f"-atheris_runs={runs}", "-timeout=10",
                        "-rss_limit_mb=2048", "-print_final_stats=1"], cwd=ROOT, capture_output=True, text=True)
    done = re.search(r"Done (\d+) (?:runs )?in (\d+) second", p.stderr)
    cov = re.findall(r"cov: (\d+)", p.stderr)
    crash = "ERROR:" in p.stderr or "Uncaught Python exception" in p.stderr or p.returncode != 0
    return {"target": target, "execs": int(done.group(1)) if done else None, "seconds": round(time.time() - t0, 1),
            "coverage_edges": int(cov[-1]) if cov else None, "crashes_or_hangs": int(crash),
            "returncode": p.returncode, "tail": p.stderr[-1500:] if crash else ""}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=100_000)
    ap.add_argument("--targets", nargs="*", default=list(TARGETS))
    args = ap.parse_args()
    results = [run(t, args.runs) for t in args.targets]
    doc = {"date": datetime.date.today().isoformat(), "machine": platform.processor() or platform.machine(),
           "python": platform.python_version(), "runs_requested": args.runs, "results": results}
    out = ROOT / "bench" / "results" / f"fuzz-{doc['date']}.json"
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
