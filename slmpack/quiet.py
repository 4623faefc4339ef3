"""Quiet by default: third-party output goes to a log file, the terminal shows only our lines.

``captured(log)`` points file descriptors 1 and 2 at ``log`` with ``os.dup2`` for the duration of
a command, so everything third-party lands there: Python ``logging`` and ``warnings`` (they write
to ``sys.stderr``, which is fd 2), tqdm bars (coremltools' "Converting PyTorch Frontend"), and
C/C++ code writing straight to the descriptors (cpuinfo "Failed to open midr", TensorFlow/oneDNN
notices, ExecuTorch ``operator_registry.cpp``, torchao's ``.so`` probes). Our own output goes to
``stdout()`` / ``stderr()``: duplicates of the descriptors as they were before the redirect.
``verbose=True`` streams everything and writes no log.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator

NOISY_LOGGERS = ("torchao", "torch.utils._pytree", "torch.onnx", "torch._export", "torch.export",
                 "torch._dynamo", "torch.fx", "coremltools", "absl", "executorch", "onnxscript", "litert_torch",
                 "tensorflow", "jax", "torch.onnx._internal.exporter._registration")
TAIL_LINES = 20


@dataclass(frozen=True)
class Terminal:
    out: IO[str]
    err: IO[str]
    log: Path | None   # where third-party output went (None: streamed, or not captured)


_active: list[Terminal] = []


def stdout() -> IO[str]:
    """Our stdout: the real terminal/pipe even while third-party output is captured."""
    return _active[-1].out if _active else sys.stdout


def stderr() -> IO[str]:
    return _active[-1].err if _active else sys.stderr


def active_log() -> Path | None:
    return _active[-1].log if _active else None


def quiet_env() -> None:
    """Environment knobs read by native code at import (set before torch/TF/absl load)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TQDM_DISABLE", "1")


def quiet_third_party() -> None:
    """Lower third-party loggers/warnings (their output is captured anyway; this keeps the log short)."""
    quiet_env()
    import torch  # noqa: F401  (torch._logging configures its loggers on import; override after)

    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)


@contextlib.contextmanager
def captured(log: Path | None, verbose: bool = False) -> Iterator[Terminal]:
    """Send fds 1/2 (and so all third-party output) to ``log`` (truncated first); yield our terminal streams."""
    if verbose or log is None:
        term = Terminal(sys.stdout, sys.stderr, None)
        _active.append(term)
        try:
            yield term
        finally:
            _active.pop()
        return
    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = (os.dup(1), os.dup(2))
    inherited = bool(_active)  # nested (a package's own log inside a build's): our streams stay the same
    if inherited:
        out, err, opened = _active[-1].out, _active[-1].err, ()
    else:
        (out, o1), (err, o2) = _ours(sys.stdout, saved[0]), _ours(sys.stderr, saved[1])
        opened = tuple(s for s, o in ((out, o1), (err, o2)) if o)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    logging.captureWarnings(True)
    root = logging.getLogger()
    handler = logging.FileHandler(log, encoding="utf-8")  # the log itself (sys.stderr may be a capture)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    term = Terminal(out, err, log)
    _active.append(term)
    try:
        yield term
    finally:
        _active.pop()
        root.removeHandler(handler)
        handler.close()
        logging.captureWarnings(False)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for s in saved:
            os.close(s)
        for s in opened:
            s.close()


def _ours(stream: IO[str], saved_fd: int) -> tuple[IO[str], bool]:
    """Our side of a descriptor: a duplicate of it, or the Python stream itself when that stream is
    not backed by a descriptor (e.g. replaced by a test harness); and whether we opened it."""
    try:
        stream.fileno()
    except (OSError, ValueError, AttributeError):
        return stream, False
    return os.fdopen(os.dup(saved_fd), "w", buffering=1, encoding="utf-8", errors="replace"), True


def tail(log: Path, n: int = TAIL_LINES) -> list[str]:
    """The last ``n`` non-empty lines of a log (tqdm's carriage returns split into lines)."""
    try:
        text = Path(log).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    lines = [ln.rstrip() for ln in text.replace("\r", "\n").splitlines() if ln.strip()]
    return lines[-n:]
