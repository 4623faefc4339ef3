"""A Ray cluster on this machine for the tests: a head and one worker node, 1 CPU each.

Each node is ``ray start --block`` in its own session (process group), so stopping it ends exactly
the processes that node started (its GCS, raylet, agents and task workers), by process group id.
Every port is chosen free, so the cluster does not collide with another Ray on the machine.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

RAY = Path(sys.executable).with_name("ray")
STARTED = "Ray runtime started."
START_TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str], log: Path, cpus: int = 1, env: dict | None = None,
           wrap: tuple[str, ...] = ()) -> subprocess.Popen:
    with open(log, "w") as f:
        p = subprocess.Popen([*wrap, str(RAY), "start", "--block", "--num-cpus", str(cpus), "--disable-usage-stats",
                              "--dashboard-agent-listen-port", str(free_port()), *args],
                             stdout=f, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    deadline = time.monotonic() + START_TIMEOUT_S
    while STARTED not in log.read_text(errors="replace"):
        if p.poll() is not None or time.monotonic() > deadline:
            _stop(p)
            raise RuntimeError(f"ray start {' '.join(args)} did not start:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.5)
    return p


def _stop(p: subprocess.Popen) -> None:
    """SIGTERM the node's process group (a graceful stop), then SIGKILL whatever of it is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(p.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        p.wait(10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(p.pid, signal.SIGKILL)
    p.wait(10)


@contextlib.contextmanager
def local_cluster(head_cpus: int = 1, worker_env: dict | None = None,
                  worker_wrap: tuple[str, ...] = ()) -> Iterator[str]:
    """Yield the head's address (127.0.0.1:PORT) of a running head + 1 worker; stop both after, even on failure.
    ``head_cpus=0``: every task runs on the worker (started with ``worker_env``, default this environment,
    its command prefixed by ``worker_wrap``; it must exec ray, keeping the pid)."""
    tmp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    port = free_port()
    nodes: list[subprocess.Popen] = []
    try:
        nodes.append(_start(["--head", "--port", str(port), "--temp-dir", str(tmp / "t"),
                             "--include-dashboard", "false", "--dashboard-port", str(free_port())],
                            tmp / "head.log", head_cpus))
        nodes.append(_start(["--address", f"127.0.0.1:{port}"], tmp / "worker.log", env=worker_env, wrap=worker_wrap))
        yield f"127.0.0.1:{port}"
    finally:
        for p in reversed(nodes):
            _stop(p)
        shutil.rmtree(tmp, ignore_errors=True)
