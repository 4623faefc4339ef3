"""An emulated aarch64 device: qemu-aarch64-static with the cached arm64 sysroot (see sysroot.py).

qemu-user shares the host's file system, so files move like the local transport's; only the
Python that runs them differs:
``qemu-aarch64-static -cpu <profile's model> -L <root view> -E PYTHONPATH=<site> <root>/usr/bin/python3.11``.
"""
from __future__ import annotations

from .local import LocalTransport

# what an idle Python costs under this emulator (qemu's translation buffers + the interpreter): the
# high-water mark of `python -c` that imports nothing; the report subtracts it from the runner's peak
IDLE_RSS = ("from pathlib import Path; print(next(ln.split()[1] for ln in "
            "Path('/proc/self/status').read_text().splitlines() if ln.startswith('VmHWM:')))")


class QemuTransport(LocalTransport):
    name = "qemu"

    def __init__(self, cpu: str = "cortex-a76", cores: int = 2, sysroot=None):
        super().__init__()
        self.cpu, self.cores = cpu, cores
        self._sysroot = sysroot
        self._baseline: float | None = None
        self._baseline_measured = False

    @property
    def sysroot(self):
        if self._sysroot is None:
            from slmpack.device_tests.sysroot import ensure_sysroot
            self._sysroot = ensure_sysroot()
        return self._sysroot

    def python_argv(self):
        return self.sysroot.qemu_argv(self.cpu, self.cores)

    def rss_baseline_mb(self) -> float | None:
        """Peak RSS of an idle Python under the same qemu and CPU model (measured once)."""
        if not self._baseline_measured:   # once per transport, a failed measurement included
            self._baseline_measured = True
            res = self.run([*self.python_argv(), "-c", IDLE_RSS], timeout=300)
            try:
                self._baseline = round(int(res.stdout.strip().splitlines()[-1]) / 1024, 1)
            except (ValueError, IndexError):
                self._baseline = None
        return self._baseline

    def describe(self):
        from slmpack.device_tests.sysroot import qemu_cpu_arg

        return {"transport": self.name, "qemu_cpu": self.cpu, "qemu_cpu_arg": qemu_cpu_arg(self.cpu),
                "cores": self.cores, "sysroot": self.sysroot.path.name, "rss_baseline_mb": self.rss_baseline_mb()}
