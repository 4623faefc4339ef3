"""Crash-safe staging beside an output path: a per-output lock, owner-stamped staging names,
removal of what dead processes left, and SIGTERM/SIGINT turned into a clean unwind.

Every temporary entry for output ``DIR/NAME`` is ``DIR/.NAME.<kind>-<pid>-<start>-<random>``
(kind: staging, old, probe), where ``start`` is the owning process's start time (clock ticks
since boot, from /proc; 0 where there is no /proc), so a recycled pid is not mistaken for the
owner. Under ``DIR/.NAME.lock`` (``flock``) a run removes every such entry whose owner is dead.
The lock file itself is removed when the run ends.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import secrets
import shutil
import signal
from pathlib import Path

from slmpack.errors import BadInputError, SlmpackError

KINDS = ("staging", "old", "probe")


class Terminated(KeyboardInterrupt):
    """Raised from the SIGTERM handler so every ``finally``/``except BaseException`` cleans up."""


class Interrupted(SlmpackError):
    default_code = "E_INTERRUPTED"

    def __init__(self, message: str, exit_code: int):
        super().__init__(message, "E_INTERRUPTED")
        self.exit_code = exit_code


_received: list[int] = []  # the signal that asked us to stop, once one has


def _stop_exception(signum: int) -> KeyboardInterrupt:
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def install_signal_handlers() -> None:
    """SIGTERM -> Terminated, SIGINT -> KeyboardInterrupt; a second signal during cleanup is ignored.

    The signal is also remembered: an exception raised while a finalizer or a library's
    ``except BaseException`` runs is swallowed, so stage boundaries and the commit call
    ``raise_if_interrupted`` and the run still stops before anything is committed."""

    def on_signal(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _received.append(signum)
        raise _stop_exception(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def raise_if_interrupted() -> None:
    """Raise the stop exception again if a signal arrived whose first raise was swallowed."""
    if _received:
        raise _stop_exception(_received[0])


def interrupted_error(exc: KeyboardInterrupt) -> Interrupted:
    if isinstance(exc, Terminated):
        return Interrupted("terminated (SIGTERM); staging removed", 128 + signal.SIGTERM)
    return Interrupted("interrupted (SIGINT); staging removed", 128 + signal.SIGINT)


def process_start(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot; None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[19])
    except FileNotFoundError:
        return None
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return 0


def _prefix(out: Path, kind: str) -> str:
    return f".{out.name}.{kind}-"


def new_entry(out: Path, kind: str) -> Path:
    """Create (mkdir) a fresh owner-stamped temporary directory beside ``out``."""
    start = process_start(os.getpid()) or 0
    path = out.parent / f"{_prefix(out, kind)}{os.getpid()}-{start}-{secrets.token_hex(4)}"
    os.mkdir(path, 0o700)
    return path


_STAMP = re.compile(r"(\d+)-(\d+)-[0-9a-f]+")


def _owner_alive(stamp: str) -> bool:
    m = _STAMP.fullmatch(stamp)
    if m is None:  # an unstamped entry (older slmpack, no lock): nobody can own it under our lock
        return False
    pid, start = int(m.group(1)), int(m.group(2))
    if pid == os.getpid():
        return False  # ours from an earlier, finished call in this process
    now = process_start(pid)
    return now is not None and (start == 0 or now == 0 or now == start)


def remove_stale(out: Path) -> list[str]:
    """Remove temporary entries of ``out`` whose owner process is dead. Call under the lock."""
    removed = []
    try:
        names = os.listdir(out.parent)
    except OSError:
        return removed
    for name in sorted(names):
        for kind in KINDS:
            prefix = _prefix(out, kind)
            if name.startswith(prefix) and not _owner_alive(name[len(prefix):]):
                path = out.parent / name
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        path.unlink()
                removed.append(name)
    return removed


@contextlib.contextmanager
def output_lock(out: Path):
    """Exclusive per-output lock (``.NAME.lock`` beside it); E_OUTPUT_BUSY if another run holds it."""
    path = out.parent / f".{out.name}.lock"
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise BadInputError(f"{path}: cannot create the output lock ({e.strerror})",
                                "E_OUTPUT_UNWRITABLE") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise BadInputError(f"{out}: another slmpack run is writing this output", "E_OUTPUT_BUSY") from None
            raise
        try:
            same = os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the previous holder removed it between our open and our lock: retry
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)
