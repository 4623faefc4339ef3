"""Subprocess helpers: per-child wall time and peak RSS (os.wait4), and the long-lived benchmark
workers (worker.py) driven over pipes."""
from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

WORKER = Path(__file__).with_name("worker.py")


def thread_env(threads: int) -> dict:
    n = str(threads)
    return {**os.environ, "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n,
            "TOKENIZERS_PARALLELISM": "false"}


def measured(cmd: list, timeout: float = 7200, env: dict | None = None) -> dict:
    """Run ``cmd``; return rc, wall seconds, the child's own peak RSS (MB, os.wait4) and its output tail."""
    t0 = time.perf_counter()
    p = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    tail: collections.deque = collections.deque(maxlen=200)
    reader = threading.Thread(target=lambda: tail.extend(l.decode(errors="replace") for l in p.stdout), daemon=True)
    reader.start()
    timer = threading.Timer(timeout, p.kill)
    timer.start()
    # Peak RSS: the child's own VmHWM, polled until it exits (VmHWM is monotonic, so the last read
    # is the peak up to ~20 ms before exit). Not rusage.ru_maxrss: Linux carries the *parent's*
    # high-water mark into a forked child across execve, so a benchmark process holding 800 MB
    # made every export look >= 800 MB.
    peak_kb, done = [0], threading.Event()

    def poll():   # never reaps the child (os.wait4 below does); a zombie has no VmHWM -> 0
        while not done.is_set():
            peak_kb[0] = max(peak_kb[0], _vmhwm_kb(p.pid))
            time.sleep(0.02)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    _, status, usage = os.wait4(p.pid, 0)
    done.set()
    timer.cancel()
    reader.join(10)
    poller.join(1)
    p.returncode = os.waitstatus_to_exitcode(status)
    return {"rc": p.returncode, "seconds": round(time.perf_counter() - t0, 2),
            "peak_rss_mb": round(peak_kb[0] / 1024, 1), "tail": "".join(tail)[-1500:]}


def _vmhwm_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((int(line.split()[1]) for line in f if line.startswith("VmHWM:")), 0)
    except (OSError, ValueError):
        return 0


class Worker:
    """One runtime in its own process (worker.py, or ``script``: encoder_worker.py)."""

    def __init__(self, name: str, python: str | Path, backend: str, path: str | Path, threads: int,
                 vocab: int | None = None, script: Path = WORKER):
        self.name = name
        self.proc = subprocess.Popen(
            [str(python), str(script), backend, str(path), "--threads", str(threads),
             *(["--vocab", str(vocab)] if vocab is not None else [])],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=thread_env(threads),
            cwd=str(Path(__file__).resolve().parents[2]))
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read()[-1500:]
            raise RuntimeError(f"{name}: worker failed to start: {err}")
        self.ready = json.loads(line)

    def ask(self, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name}: worker died: {self.proc.stderr.read()[-1500:]}")
        return json.loads(line)

    def close(self) -> None:
        try:
            self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=60)
        except Exception:
            self.proc.kill()


def main_python() -> str:
    return sys.executable
