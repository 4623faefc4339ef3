"""Reading files of a model directory without leaving it.

Every file read from a model directory goes through :func:`open_inside`: the name is a plain
relative name, the path is not a symlink (unless ``follow_symlinks``, and then the resolved path
must still be inside the root), and it is a regular file — FIFOs and device files are refused
before they are opened, so nothing blocks. The file is opened with ``O_NOFOLLOW | O_NONBLOCK``
and re-checked with ``fstat`` on the open descriptor (the file checked is the file read).
"""
from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from slmpack.errors import BadInputError

MAX_JSON_BYTES = 64 << 20        # config / generation config / shard index / tokenizer config
MAX_JSON_DEPTH = 64


@dataclass(frozen=True)
class ModelRoot:
    """A model directory and whether symlinks inside it may be followed (still confined)."""

    path: Path
    follow_symlinks: bool = False

    @property
    def real(self) -> Path:
        return Path(os.path.realpath(self.path))


def regular_file(path: Path, what: str, missing: str, irregular: str) -> os.stat_result:
    """``stat`` of a user-named input that must be a regular file (never a FIFO, device or directory,
    which could block or never end); a typed error with ``missing`` / ``irregular`` otherwise."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise BadInputError(f"{path}: {what} cannot be opened ({e.strerror})", missing) from None
    if not stat.S_ISREG(st.st_mode):
        raise BadInputError(f"{path}: {what} is not a regular file (FIFO, device or directory); refused", irregular)
    return st


def plain_name(name, where: str) -> str:
    """A plain relative file name: a string, one path component, no '..', no NUL, no separators."""
    if not isinstance(name, str) or not name or len(name.encode("utf-8", "surrogatepass")) > 255:
        raise BadInputError(f"{where}: {name!r:.80} is not a plain file name", "E_PATH_UNSAFE")
    p = PurePosixPath(name)
    if ("\0" in name or "\\" in name or p.is_absolute() or len(p.parts) != 1 or name in (".", "..")
            or p.parts[0] != name):
        raise BadInputError(f"{where}: {name!r:.80} is not a plain relative file name inside the model "
                            "directory", "E_PATH_UNSAFE")
    return name


def _resolve(root: ModelRoot, name: str) -> Path:
    plain_name(name, str(root.path))
    path = root.path / name
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        if not root.follow_symlinks:
            raise BadInputError(f"{path} is a symlink; refused (pass --follow-symlinks to follow links that "
                                "stay inside the model directory)", "E_SYMLINK_REFUSED")
        real = Path(os.path.realpath(path))
        base = root.real
        if real != base and base not in real.parents:
            raise BadInputError(f"{path} is a symlink to {real}, outside the model directory", "E_PATH_UNSAFE")
        return real
    return path


def exists(root: ModelRoot, name: str) -> bool:
    """True if ``name`` is present (as anything: a non-regular file still fails when opened)."""
    return os.path.lexists(root.path / plain_name(name, str(root.path)))


def open_inside(root: ModelRoot, name: str):
    """Open ``name`` in ``root`` for binary reading, with every rule in the module docstring."""
    try:
        path = _resolve(root, name)
        st = os.stat(path)
    except OSError as e:
        raise BadInputError(f"{root.path / name}: cannot open ({e.strerror})", "E_PATH_UNSAFE") from None
    if not stat.S_ISREG(st.st_mode):
        raise BadInputError(f"{root.path / name}: not a regular file (FIFO, device or directory); refused",
                            "E_NOT_REGULAR_FILE")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise BadInputError(f"{path}: cannot open ({e.strerror})", "E_PATH_UNSAFE") from None
    fst = os.fstat(fd)
    if not stat.S_ISREG(fst.st_mode) or (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):
        os.close(fd)
        raise BadInputError(f"{path}: changed while being opened; refused", "E_PATH_UNSAFE")
    return os.fdopen(fd, "rb")


def read_bytes(root: ModelRoot, name: str, limit: int | None = None) -> bytes:
    with open_inside(root, name) as f:
        size = os.fstat(f.fileno()).st_size
        if limit is not None and size > limit:
            raise BadInputError(f"{root.path / name}: {size} bytes, more than the {limit}-byte limit",
                                "E_INPUT_TOO_LARGE")
        return f.read()


def _depth(text: str) -> int:
    """Maximum bracket nesting depth outside strings (cheap pre-check before json.loads)."""
    depth = best = 0
    in_str = esc = False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            best = max(best, depth)
            if best > MAX_JSON_DEPTH:
                return best
        elif ch in "]}":
            depth -= 1
    return best


def parse_json(data: bytes, where: str, code: str = "E_CONFIG_INVALID"):
    """JSON from bytes: invalid UTF-8, invalid JSON, NaN/Infinity literals and nesting deeper than
    MAX_JSON_DEPTH are each a typed BadInputError (never RecursionError)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadInputError(f"{where}: not UTF-8 ({e.reason})", code) from None
    if _depth(text) > MAX_JSON_DEPTH:
        raise BadInputError(f"{where}: JSON nested deeper than {MAX_JSON_DEPTH} levels", code)

    def no_constant(c):
        raise ValueError(f"non-finite number {c}")

    try:
        return json.loads(text, parse_constant=no_constant)
    except (ValueError, RecursionError) as e:
        raise BadInputError(f"{where}: invalid JSON ({str(e).splitlines()[0][:200]})", code) from None


def read_json(root: ModelRoot, name: str, code: str = "E_CONFIG_INVALID"):
    return parse_json(read_bytes(root, name, MAX_JSON_BYTES), str(root.path / name), code)
