"""A torch-free ExecuTorch runtime for a device: ``libslm_et.so`` + the wheel's runtime libraries.

ExecuTorch's Python bindings import torch, and PyPI's aarch64 torch is a CUDA build (its
``libtorch_cuda.so`` needs the CUDA toolkit wheels), so no board or phone can import
``executorch.runtime`` from PyPI wheels. The executorch wheel itself ships the C++ runtime
torch-free in ``executorch/lib`` (program loader and ``Module``, XNNPACK backend, optimized and
quantized kernels, threadpool) with headers. This module compiles ``runtime/native/et_shim.cpp``
against them, for the host (the venv's executorch, with ``g++``) or for aarch64 (the aarch64
wheel from PyPI, with Debian's ``g++-aarch64-linux-gnu`` cross compiler), and puts the shim and
the libraries it needs in one directory whose RUNPATH is ``$ORIGIN``: copy that directory to a
device and set ``SLMPACK_ET_LIB=<dir>/libslm_et.so`` for the runner.

Cached under ``$SLMPACK_CACHE/et-runtime/<arch>-<key>`` (key: the shim's source, the executorch
version, the compiler and its flags), built in a temporary folder and renamed into place.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import slmpack.runtime as _kit
from slmpack.device_tests.sysroot import WHEEL_PLATFORMS, apt_install, cache_root
from slmpack.device_tests.sysroot import _run as run
from slmpack.errors import ToolchainError

ET_VERSION = "1.5.1"  # constraints.txt's executorch pin (tests/device_tests/test_et_runtime.py checks)
SHIM = Path(_kit.__file__).parent / "native" / "et_shim.cpp"
LIBS = ("libexecutorch.so", "libexecutorch_threadpool.so", "libexecutorch_backend_xnnpack.so",
        "libexecutorch_kernels_optimized.so", "libexecutorch_kernels_quantized.so")
CROSS = {"aarch64": ("aarch64-linux-gnu-g++", "g++-aarch64-linux-gnu")}  # compiler, Debian package
FLAGS = ("-std=c++17", "-O2", "-fPIC", "-shared", "-Wno-deprecated-declarations",
         "-DC10_USING_CUSTOM_GENERATED_MACROS", "-DET_EVENT_TRACER_ENABLED")


@dataclass(frozen=True)
class EtRuntime:
    path: Path

    @property
    def lib(self) -> Path:
        return self.path / "libslm_et.so"

    @property
    def stamp(self) -> dict:
        return json.loads((self.path / "stamp.json").read_text())


def _fail(msg: str, **details) -> ToolchainError:
    return ToolchainError(msg, code="E_ET_RUNTIME_BUILD", details=details)


def _run(argv: list[str], what: str) -> str:
    return run(argv, what=what, code="E_ET_RUNTIME_BUILD")


def compiler(arch: str) -> str:
    """The C++ compiler for ``arch``: ``g++`` natively, else the cross compiler (apt-installed when
    missing and we are root)."""
    if arch == platform.machine():
        found = shutil.which("g++")
        if not found:
            raise _fail("g++ not found; install it with `apt-get install g++`")
        return found
    if arch not in CROSS:
        raise _fail(f"no cross compiler known for {arch!r}; known: {', '.join(CROSS)}")
    exe, package = CROSS[arch]
    if not shutil.which(exe) and os.geteuid() == 0 and shutil.which("apt-get"):
        apt_install(package)   # a failure shows as the compiler still missing, below
    found = shutil.which(exe)
    if not found:
        raise _fail(f"{exe} not found; install it with `apt-get install {package}`")
    return found


def _key(arch: str, cxx: str) -> str:
    version = _run([cxx, "--version"], f"{cxx} --version").splitlines()[0]
    spec = {"arch": arch, "et": ET_VERSION, "shim": hashlib.sha256(SHIM.read_bytes()).hexdigest(),
            "cxx": version, "flags": FLAGS, "libs": LIBS}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def _executorch_tree(arch: str, work: Path) -> Path:
    """A directory holding ``executorch/{lib,include}`` for ``arch``."""
    if arch == platform.machine():
        import importlib.util

        spec = importlib.util.find_spec("executorch")  # a namespace package: no __file__
        if spec is None or not spec.submodule_search_locations:
            raise _fail("executorch is not installed here: pip install 'slmpack[executorch]'")
        return Path(list(spec.submodule_search_locations)[0]).parent
    wheels = work / "wheels"
    platforms = [arg for p in WHEEL_PLATFORMS for arg in ("--platform", p)]
    _run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
          "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp", *platforms,
          "-d", str(wheels), f"executorch=={ET_VERSION}"], f"pip download executorch=={ET_VERSION} ({arch})")
    (wheel,) = wheels.glob("executorch-*.whl")
    tree = work / "tree"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(tree, [n for n in zf.namelist() if n.startswith(("executorch/lib/", "executorch/include/"))])
    return tree


def ensure_et_runtime(arch: str | None = None, cache: Path | None = None) -> EtRuntime:
    """Build (once) and return the runtime directory for ``arch`` (default: this machine's)."""
    arch = arch or platform.machine()
    cxx = compiler(arch)
    base = Path(cache) if cache else cache_root().parent / "et-runtime"   # beside the aarch64 sysroot
    base.mkdir(parents=True, exist_ok=True)
    final = base / f"{arch}-{_key(arch, cxx)}"
    if (final / "stamp.json").exists():
        return EtRuntime(final)
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (final / "stamp.json").exists():
            return EtRuntime(final)
        tmp = Path(tempfile.mkdtemp(prefix=f".{arch}-", dir=base))
        try:
            et = _executorch_tree(arch, tmp / "work") / "executorch"
            out = tmp / "rt"
            out.mkdir()
            for name in LIBS:
                shutil.copy2(et / "lib" / name, out / name)
            inc = et / "include"
            _run([cxx, *FLAGS, f'-DSLM_ET_VERSION="{ET_VERSION}"', "-o", str(out / "libslm_et.so"), str(SHIM),
                  f"-I{inc}", f"-I{inc / 'executorch/runtime/core/portable_type/c10'}", f"-L{out}",
                  "-Wl,--no-as-needed", *(f"-l{n[3:-3]}" for n in LIBS), "-Wl,-rpath,$ORIGIN"],
                 f"compiling the ExecuTorch shim for {arch}")
            stamp = {"arch": arch, "executorch": ET_VERSION, "compiler": cxx, "libs": sorted(LIBS),
                     "size_mb": round(sum(f.stat().st_size for f in out.iterdir()) / 2**20, 1)}
            (out / "stamp.json").write_text(json.dumps(stamp, indent=2, sort_keys=True) + "\n")
            os.rename(out, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return EtRuntime(final)
