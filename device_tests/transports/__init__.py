"""Transports: how files and commands reach a device. One file per transport, one interface
(``base.Transport``). Registered explicitly by name; ``make_transport`` builds one for a profile."""
from __future__ import annotations

import os

from slmpack.errors import BadInputError

from .adb import AdbTransport
from .base import RunResult, Transport
from .local import LocalTransport
from .qemu import QemuTransport
from .ssh import SSHTransport
from .xcode import XcodeTransport, generate_project

TRANSPORTS: dict[str, type[Transport]] = {}


def register(cls: type[Transport]) -> type[Transport]:
    if cls.name in TRANSPORTS:
        raise ValueError(f"transport {cls.name!r} is already registered")
    TRANSPORTS[cls.name] = cls
    return cls


for _cls in (LocalTransport, QemuTransport, SSHTransport, AdbTransport, XcodeTransport):
    register(_cls)


def make_transport(name: str, profile=None, **options) -> Transport:
    """A transport for ``profile`` (its [transport] table, then ``options`` override)."""
    if name not in TRANSPORTS:
        raise BadInputError(f"unknown transport {name!r}; known: {', '.join(sorted(TRANSPORTS))}",
                            code="E_TRANSPORT_UNKNOWN")
    cfg = profile.transport if profile is not None else None

    def pick(key, default):
        return options.get(key) or (getattr(cfg, key, None) if cfg else None) or default

    if name == "local":
        return LocalTransport(python=options.get("python"))
    if name == "qemu":
        if profile is None or not profile.cpu.qemu_cpu:
            raise BadInputError("the qemu transport needs a profile with cpu.qemu_cpu",
                                code="E_BAD_INPUT")
        return QemuTransport(cpu=options.get("cpu") or profile.cpu.qemu_cpu,
                             cores=options.get("cores") or profile.cpu.cores, sysroot=options.get("sysroot"))
    if name == "ssh":
        key = pick("key", None)
        return SSHTransport(host=pick("host", ""), port=int(pick("port", 22)), user=pick("user", ""),
                            key=os.path.expanduser(key) if key else None, known_hosts=options.get("known_hosts"),
                            python=pick("python", "python3"), remote_dir=pick("remote_dir", "/tmp"))
    if name == "adb":
        return AdbTransport(serial=pick("serial", ""), adb=options.get("adb", "adb"),
                            python=pick("python", "python3"), remote_dir=pick("remote_dir", "/data/local/tmp"))
    return XcodeTransport(project_dir=options.get("project_dir"), python=pick("python", "python3"))


__all__ = ["AdbTransport", "LocalTransport", "QemuTransport", "RunResult", "SSHTransport", "TRANSPORTS",
           "Transport", "XcodeTransport", "generate_project", "make_transport"]
