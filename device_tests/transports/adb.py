"""An Android device reached with ``adb`` (push / shell / pull).

Android ships no Python: set ``python`` to one on the device (e.g. Termux's, or a python
pushed with the package). ``adb shell`` returns the device command's exit status (adb >= 1.0.39
with shell protocol v2).
"""
from __future__ import annotations

import shlex
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Sequence

from slmpack.errors import ToolchainError

from .base import DEFAULT_TIMEOUT, RunResult, Transport, check_remote_name, tail, timeout_error


class AdbTransport(Transport):
    name = "adb"

    def __init__(self, serial: str = "", *, adb: str = "adb", python: str = "python3",
                 remote_dir: str = "/data/local/tmp"):
        self.serial, self.adb, self.python = serial, adb, python
        self.workdir = f"{remote_dir.rstrip('/')}/slmpack-{uuid.uuid4().hex[:12]}"
        self._created = False

    def _adb(self, args: list[str], timeout: float, what: str) -> RunResult:
        exe = shutil.which(self.adb)
        if exe is None:
            raise ToolchainError(f"{self.adb!r} not found on PATH: install Android platform-tools "
                                 "(Debian package `adb`)", code="E_TRANSPORT_MISSING")
        argv = [exe, *(["-s", self.serial] if self.serial else []), *args]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise timeout_error(f"adb {what}", timeout) from None
        return RunResult(proc.returncode, proc.stdout, proc.stderr)

    def _checked(self, args: list[str], timeout: float, what: str) -> RunResult:
        res = self._adb(args, timeout, what)
        if res.rc:
            raise ToolchainError(f"adb {what} failed (exit {res.rc}): {tail(res.stderr or res.stdout)}",
                                 code="E_DEVICE_IO")
        return res

    def _ensure_workdir(self):
        if not self._created:
            self._checked(["shell", f"mkdir -p {shlex.quote(self.workdir)}"], 60, "mkdir")
            self._created = True

    def push(self, local_path, remote_name):
        self._ensure_workdir()
        remote = f"{self.workdir}/{check_remote_name(remote_name)}"
        self._checked(["shell", f"rm -rf {shlex.quote(remote)}"], 60, "rm")
        self._checked(["push", str(local_path), remote], 3600, f"push {remote_name}")
        return remote

    def run(self, argv: Sequence[str], timeout: float = DEFAULT_TIMEOUT) -> RunResult:
        self._ensure_workdir()
        return self._adb(["shell", f"cd {shlex.quote(self.workdir)} && {shlex.join(argv)}"], timeout, "shell")

    def fetch(self, remote_name, local_path):
        Path(local_path).parent.mkdir(parents=True, exist_ok=True)
        remote = f"{self.workdir}/{check_remote_name(remote_name)}"
        self._checked(["pull", remote, str(local_path)], 3600, f"pull {remote_name}")
        return str(local_path)

    def cleanup(self):
        if self._created:
            self._created = False
            self._adb(["shell", f"rm -rf {shlex.quote(self.workdir)}"], 60, "cleanup")

    def python_argv(self):
        return shlex.split(self.python)

    def describe(self):
        return {"transport": self.name, "serial": self.serial, "python": self.python}
