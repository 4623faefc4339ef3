"""An emulated aarch64 device: qemu-aarch64-static with the cached arm64 sysroot (see sysroot.py).

qemu-user shares the host's file system, so files move like the local transport's; only the
Python that runs them differs:
``qemu-aarch64-static -cpu <profile's model> -L <root view> -E PYTHONPATH=<site> <root>/usr/bin/python3.11``.
"""
from __future__ import annotations

from .local import LocalTransport


class QemuTransport(LocalTransport):
    name = "qemu"

    def __init__(self, cpu: str = "cortex-a76", cores: int = 2, sysroot=None):
        super().__init__()
        self.cpu, self.cores = cpu, cores
        self._sysroot = sysroot

    @property
    def sysroot(self):
        if self._sysroot is None:
            from slmpack.device_tests.sysroot import ensure_sysroot
            self._sysroot = ensure_sysroot()
        return self._sysroot

    def python_argv(self):
        return self.sysroot.qemu_argv(self.cpu, self.cores)

    def describe(self):
        return {"transport": self.name, "qemu_cpu": self.cpu, "cores": self.cores,
                "sysroot": self.sysroot.path.name}
