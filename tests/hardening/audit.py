"""Record every file the process opens (``sys.addaudithook`` on ``open``), for containment checks."""
from __future__ import annotations

import contextlib
import os
import sys

_recording: list[str] | None = None


def _hook(event: str, args) -> None:
    if _recording is not None and event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        _recording.append(os.path.abspath(os.fsdecode(args[0])))


sys.addaudithook(_hook)


@contextlib.contextmanager
def record_opens():
    global _recording
    opened: list[str] = []
    _recording = opened
    try:
        yield opened
    finally:
        _recording = None


def snapshot(root) -> dict:
    """Every entry under root except directory mtimes: (kind, size, mtime) by relative path."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            kind = st.st_mode & 0o170000
            out[os.path.relpath(p, root)] = (kind, None if kind == 0o040000 else (st.st_size, st.st_mtime_ns))
    return out
