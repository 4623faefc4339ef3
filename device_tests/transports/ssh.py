"""A Linux device reached with OpenSSH's ssh/scp (key authentication, no passwords, no prompts).

Host keys: give ``known_hosts`` to check the device strictly; without it the transport keeps a
private known_hosts file for its own lifetime and trusts the key it first sees (accept-new),
so a key that changes mid-run is still refused.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Sequence

from slmpack.errors import BadInputError, ToolchainError

from .base import DEFAULT_TIMEOUT, RunResult, Transport, check_remote_name, tail, timeout_error

SSH_FAILED = 255


class SSHTransport(Transport):
    name = "ssh"

    def __init__(self, host: str, port: int = 22, user: str = "", key: str | os.PathLike | None = None,
                 *, known_hosts: str | os.PathLike | None = None, python: str = "python3",
                 remote_dir: str = "/tmp", connect_timeout: int = 10):
        if not host:
            raise BadInputError("ssh transport needs a host (profile [transport].host or --host)",
                                code="E_BAD_INPUT")
        self.host, self.port, self.user, self.python = host, int(port), user, python
        self.key = str(key) if key else None
        self._tmp = tempfile.mkdtemp(prefix="slmpack-ssh-")
        self.known_hosts = str(known_hosts) if known_hosts else os.path.join(self._tmp, "known_hosts")
        self.strict = "yes" if known_hosts else "accept-new"
        self.connect_timeout = connect_timeout
        self.workdir = f"{remote_dir.rstrip('/') or ''}/slmpack-{uuid.uuid4().hex[:12]}"
        self._created = False

    @property
    def target(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def _opts(self) -> list[str]:
        opts = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout}",
                "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", f"StrictHostKeyChecking={self.strict}",
                "-o", "LogLevel=ERROR", "-F", "/dev/null",
                # one TCP/SSH handshake for all the calls of a run; the master exits by itself
                "-o", "ControlMaster=auto", "-o", f"ControlPath={self._tmp}/cm-%C", "-o", "ControlPersist=60"]
        if self.key:
            opts += ["-i", self.key, "-o", "IdentitiesOnly=yes"]
        return opts

    def _exec(self, argv: list[str], timeout: float, what: str) -> RunResult:
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise timeout_error(f"ssh {self.target}: {what}", timeout) from None
        except FileNotFoundError as exc:
            raise ToolchainError(f"{exc.filename} not found: install openssh-client",
                                 code="E_TRANSPORT_MISSING") from None
        return RunResult(proc.returncode, proc.stdout, proc.stderr)

    def _shell(self, command: str, timeout: float, what: str) -> RunResult:
        res = self._exec(["ssh", "-p", str(self.port), *self._opts(), self.target, command], timeout, what)
        if res.rc == SSH_FAILED:
            raise ToolchainError(f"ssh {self.target}:{self.port} failed during {what}: {tail(res.stderr)}",
                                 code="E_DEVICE_UNREACHABLE")
        return res

    def _ensure_workdir(self):
        if not self._created:
            res = self._shell(f"mkdir -p {shlex.quote(self.workdir)}", 60, "mkdir")
            if res.rc:
                raise ToolchainError(f"cannot create {self.workdir} on {self.target}: {tail(res.stderr)}",
                                     code="E_DEVICE_IO")
            self._created = True

    def _scp(self, src: str, dst: str, what: str):
        res = self._exec(["scp", "-q", "-r", "-P", str(self.port), *self._opts(), src, dst], 3600, what)
        if res.rc:
            raise ToolchainError(f"scp {what} failed (exit {res.rc}): {tail(res.stderr)}", code="E_DEVICE_IO")

    def push(self, local_path, remote_name):
        self._ensure_workdir()
        remote = f"{self.workdir}/{check_remote_name(remote_name)}"
        self._shell(f"rm -rf {shlex.quote(remote)}", 60, "rm")
        self._scp(str(local_path), f"{self.target}:{remote}", f"push {remote_name}")
        return remote

    def run(self, argv: Sequence[str], timeout: float = DEFAULT_TIMEOUT) -> RunResult:
        self._ensure_workdir()
        return self._shell(f"cd {shlex.quote(self.workdir)} && {shlex.join(argv)}", timeout, "run")

    def fetch(self, remote_name, local_path):
        Path(local_path).parent.mkdir(parents=True, exist_ok=True)
        remote = f"{self.workdir}/{check_remote_name(remote_name)}"
        self._scp(f"{self.target}:{remote}", str(local_path), f"fetch {remote_name}")
        return str(local_path)

    def cleanup(self):
        try:
            if self._created:
                self._created = False
                self._shell(f"rm -rf {shlex.quote(self.workdir)}", 60, "cleanup")
        finally:
            if os.path.isdir(self._tmp):
                self._exec(["ssh", "-p", str(self.port), *self._opts(), "-O", "exit", self.target], 30, "close")
                shutil.rmtree(self._tmp, ignore_errors=True)

    def python_argv(self):
        return shlex.split(self.python)

    def describe(self):
        return {"transport": self.name, "host": self.host, "port": self.port, "user": self.user,
                "python": self.python}
