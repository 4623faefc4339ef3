"""Fuzz every parser for N executions each (default 100k) and write bench/results/fuzz-<date>.json.

Not run in CI. Needs atheris (``pip install atheris==3.0.0``; the newest with a cp311 wheel).
Usage: ``python -m bench.fuzz.run [--runs N] [--targets T...]``; exits 1 unless every run is clean.

Each run gets one outcome, read from libFuzzer's and atheris's own reports (stdout and stderr):
``crash`` (atheris' "Uncaught Python exception", or a libFuzzer "ERROR:" such as a deadly signal),
``timeout`` (atheris' "=== Timeout" or libFuzzer's "ERROR: libFuzzer: timeout"), ``oom``
(libFuzzer's "out-of-memory"), ``exit-before-done`` (a non-zero exit with no report and no
"Done N"), ``exit-after-done`` (all N inputs ran without a report, then the process did not exit
0: a harness fault, not a parser's; kept apart and never counted clean), or ``clean``. Crash
inputs go to a temporary -artifact_prefix directory; their bytes (hex, up to 4 KiB) are recorded.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.fuzz.harness import TARGETS

ROOT = Path(__file__).resolve().parents[2]
FAILURES = ("crash", "timeout", "oom", "exit-before-done")
MAX_ARTIFACT = 4096


@dataclass(frozen=True)
class Outcome:
    kind: str     # "clean" | one of FAILURES | "exit-after-done"
    reason: str   # the report line or exit status that decided it


@dataclass(frozen=True)
class FuzzResult:
    target: str
    execs: int | None
    seconds: float
    coverage_edges: int | None
    returncode: int
    outcome: Outcome
    artifacts: tuple[tuple[str, str], ...]   # (file name, hex of its bytes) of inputs libFuzzer saved
    tail: str

    def to_json(self) -> dict:
        return {"target": self.target, "execs": self.execs, "seconds": self.seconds,
                "coverage_edges": self.coverage_edges, "crashes_or_hangs": int(self.outcome.kind in FAILURES),
                "outcome": self.outcome.kind, "reason": self.outcome.reason, "returncode": self.returncode,
                "artifacts": [{"file": f, "hex": h} for f, h in self.artifacts], "tail": self.tail}


def _status(returncode: int) -> str:
    if returncode < 0:
        return f"killed by {signal.Signals(-returncode).name}"
    return f"exit {returncode}"


def classify(returncode: int, out: str, err: str, runs: int) -> Outcome:
    """The outcome of one harness process from its exit status and its two output streams."""
    text = out + "\n" + err
    first = lambda pattern: re.search(pattern, text, re.MULTILINE).group(0).strip()  # noqa: E731
    if "Uncaught Python exception" in text:
        return Outcome("crash", first(r"^.*Uncaught Python exception.*$\n.*$"))
    if "=== Timeout" in text or "ERROR: libFuzzer: timeout" in text:
        return Outcome("timeout", first(r"^.*(=== Timeout|ERROR: libFuzzer: timeout).*$"))
    if "ERROR: libFuzzer: out-of-memory" in text:
        return Outcome("oom", first(r"^.*ERROR: libFuzzer: out-of-memory.*$"))
    if re.search(r"^.*ERROR:", text, re.MULTILINE):
        return Outcome("crash", first(r"^.*ERROR:.*$"))
    done = re.search(rf"^Done {runs} in \d+ second", err, re.MULTILINE)
    if not done:
        return Outcome("exit-before-done", f"{_status(returncode)} without 'Done {runs}'")
    if returncode != 0:
        return Outcome("exit-after-done", f"{_status(returncode)} after 'Done {runs}'")
    return Outcome("clean", f"Done {runs}, exit 0")


def run(target: str, runs: int) -> FuzzResult:
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix=f"slmpack-fuzz-{target}-") as art:
        p = subprocess.run([sys.executable, "-m", "bench.fuzz.harness", target, f"-atheris_runs={runs}",
                            "-timeout=10", "-rss_limit_mb=2048", "-print_final_stats=1",
                            f"-artifact_prefix={art}/"], cwd=ROOT, capture_output=True, text=True)
        artifacts = tuple((f.name, f.read_bytes()[:MAX_ARTIFACT].hex()) for f in sorted(Path(art).iterdir()))
    done = re.search(r"^Done (\d+) (?:runs )?in (\d+) second", p.stderr, re.MULTILINE)
    cov = re.findall(r"cov: (\d+)", p.stderr)
    outcome = classify(p.returncode, p.stdout, p.stderr, runs)
    failed = outcome.kind != "clean"
    return FuzzResult(target, int(done.group(1)) if done else None, round(time.time() - t0, 1),
                      int(cov[-1]) if cov else None, p.returncode, outcome, artifacts,
                      (p.stdout[-1500:] + "\n--- stderr ---\n" + p.stderr[-1500:]) if failed else "")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=100_000)
    ap.add_argument("--targets", nargs="*", default=list(TARGETS))
    args = ap.parse_args()
    results = []
    for t in args.targets:  # one at a time: each harness is single-threaded and CPU-bound
        results.append(run(t, args.runs))
        print(f"{t}: {results[-1].outcome.kind} ({results[-1].outcome.reason})", file=sys.stderr, flush=True)
    doc = {"date": datetime.date.today().isoformat(), "machine": platform.processor() or platform.machine(),
           "python": platform.python_version(), "runs_requested": args.runs,
           "results": [r.to_json() for r in results]}
    out = ROOT / "bench" / "results" / f"fuzz-{doc['date']}.json"
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))
    return 0 if all(r.outcome.kind == "clean" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
