"""The host itself as the device: a temporary working directory and the host's Python."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from slmpack.errors import BadInputError

from .base import DEFAULT_TIMEOUT, RunResult, Transport, check_remote_name, timeout_error


def copy_path(src: Path, dst: Path) -> None:
    """Copy a file or a tree of regular files; a symlink anywhere is refused, never followed."""
    links = [src] if src.is_symlink() else [p for p in src.rglob("*") if p.is_symlink()] if src.is_dir() else []
    if links:
        raise BadInputError(f"{links[0]}: symlinks are never copied to a device", "E_PACKAGE_INTEGRITY")
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        shutil.rmtree(dst) if dst.is_dir() and not dst.is_symlink() else dst.unlink()
    if src.is_dir():
        shutil.copytree(src, dst, symlinks=False)
    else:
        shutil.copy2(src, dst)


class LocalTransport(Transport):
    name = "local"

    def __init__(self, python: str | None = None, env: dict | None = None):
        self._python = python or sys.executable
        self.env = env
        self._workdir: Path | None = None

    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix=f"slmpack-{self.name}-"))
        return self._workdir

    def push(self, local_path, remote_name):
        dst = self.workdir / check_remote_name(remote_name)
        copy_path(Path(local_path), dst)
        return str(dst)

    def run(self, argv: Sequence[str], timeout: float = DEFAULT_TIMEOUT) -> RunResult:
        env = None if self.env is None else {**os.environ, **self.env}
        try:
            proc = subprocess.run(list(argv), cwd=self.workdir, capture_output=True, text=True,
                                  timeout=timeout, env=env, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise timeout_error(f"{self.name}: {argv[0]}", timeout) from None
        return RunResult(proc.returncode, proc.stdout, proc.stderr)

    def fetch(self, remote_name, local_path):
        copy_path(self.workdir / check_remote_name(remote_name), Path(local_path))
        return str(local_path)

    def cleanup(self):
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def python_argv(self):
        return [self._python]

    def describe(self):
        return {"transport": self.name, "python": self._python}
