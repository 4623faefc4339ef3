"""An emulated aarch64 "device" root: arm64 Debian userland + aarch64 wheels, run with qemu-user.

Follows ../shared/TOOLCHAIN.md ("An emulated ARM64 device"), step by step:

1. ``qemu-aarch64-static`` (Debian ``qemu-user-static``; installed with apt-get when missing).
2. arm64 ``.deb`` files fetched with apt-get under a private state/cache/sources configuration
   (the host's architecture list is never changed) and unpacked with ``dpkg -x`` into ``root/``.
3. aarch64 wheels fetched with ``pip download --only-binary=:all: --platform ...aarch64`` and
   unzipped into ``site/``.
4. A fake ARM ``proc/cpuinfo`` and ``sys/devices/system/cpu/{possible,present,online}`` so the
   runtimes' CPU detection does not read the host's x86 files and crash. Because those files
   depend on the emulated core, they live in small per-CPU *views* (``views/<cpu>-<n>c/``) whose
   other top-level entries are symlinks into the shared ``root/`` (qemu's ``-L`` lookup follows
   symlinks).

The build is cached under ``$SLMPACK_CACHE/aarch64`` (default ``~/.cache/slmpack/aarch64``),
keyed by a digest of everything that decides its content, built in a temporary folder and
renamed into place (atomic), guarded by a lock file, and marked complete by ``stamp.json``.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from slmpack.errors import ToolchainError

SUITE = "bookworm"  # the Debian release whose python3.11 we use
PYTHON = "3.11"
DEB_PACKAGES = (
    "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib", "libc6", "zlib1g",
    "libexpat1", "libssl3", "libffi8", "libstdc++6", "libgcc-s1", "libbz2-1.0", "liblzma5",
    "libsqlite3-0", "libncursesw6", "libtinfo6", "libreadline8", "libuuid1", "libgomp1",
    "libcrypt1", "libnsl2", "libtirpc3", "libdb5.3", "media-types",
)
# cryptography (+ its cffi and pycparser, pinned too): the runner's --require-signature check
# (runtime/signature.py), the same cryptography as scripts/bootstrap-sign.sh's device-site
WHEELS = ("onnxruntime==1.32.0", "numpy==2.4.6", "ai-edge-litert==2.3.0", "cryptography==50.0.2", "cffi==2.1.1",
          "pycparser==3.12")
WHEEL_PLATFORMS = ("manylinux_2_28_aarch64", "manylinux_2_27_aarch64", "manylinux_2_17_aarch64",
                   "manylinux2014_aarch64")
QEMU = "qemu-aarch64-static"

# MIDR fields of the qemu 7.2 cpu models our profiles name; features are what Linux prints for that core.
_CORES = {
    "cortex-a53": ("0x41", "0x0", "0xd03", "0x4", "fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid"),
    "cortex-a72": ("0x41", "0x0", "0xd08", "0x3", "fp asimd evtstrm crc32 cpuid"),
    "cortex-a76": ("0x41", "0x4", "0xd0b", "0x1", "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics "
                   "fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"),
    "neoverse-n1": ("0x41", "0x3", "0xd0c", "0x1", "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics "
                    "fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs"),
    "max": ("0x41", "0x0", "0xd49", "0x0", "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp "
            "asimdhp cpuid asimdrdm jscvt fcma lrcpc dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm "
            "dit uscat ilrcpc flagm ssbs sb paca pacg dcpodp sve2 sveaes svepmull svebitperm "
            "svesha3 svesm4 flagm2 frint svei8mm svebf16 i8mm bf16"),
}

# qemu's `max` also implements SME / SME2, which no profile lists and the fake /proc/cpuinfo does not
# show; the runtimes find it through the auxiliary vector (HWCAP2) all the same, and XNNPACK /
# KleidiAI then run SME kernels (emulated ~5x slower, and not the Armv9 phone core the profile
# describes). Turned off, so the runtime sees the profile's ISA: i8mm, bf16, SVE2 without SME.
# qemu-user's SVE vectors default to 512 bits; every shipping SVE2 phone / Neoverse N2 core (the part
# the fake cpuinfo names) has 128-bit vectors, which kernels read with `cntb`: 16 bytes, as on the
# device (and ~3x less emulation work per cell).
QEMU_CPU_PROPERTIES = {"max": "sme=off,sve-default-vector-length=16"}


def qemu_cpu_arg(cpu: str) -> str:
    """The ``-cpu`` value for a profile's qemu cpu model."""
    return f"{cpu},{QEMU_CPU_PROPERTIES[cpu]}" if cpu in QEMU_CPU_PROPERTIES else cpu


def cache_root() -> Path:
    base = os.environ.get("SLMPACK_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "slmpack") / "aarch64"


def build_key() -> str:
    spec = {"suite": SUITE, "python": PYTHON, "debs": DEB_PACKAGES, "wheels": WHEELS,
            "platforms": WHEEL_PLATFORMS, "layout": 1}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Sysroot:
    """A built, verified sysroot. ``root`` is the shared arm64 tree, ``site`` the wheels."""

    path: Path

    @property
    def root(self) -> Path:
        return self.path / "root"

    @property
    def site(self) -> Path:
        return self.path / "site"

    @property
    def python(self) -> Path:
        return self.root / "usr" / "bin" / f"python{PYTHON}"

    @property
    def stamp(self) -> dict:
        return json.loads((self.path / "stamp.json").read_text())

    def view(self, cpu: str, cores: int = 2) -> Path:
        """A root for ``qemu -L`` whose proc/cpuinfo and sys/ describe ``cores`` × ``cpu``."""
        if cpu not in _CORES:
            raise ToolchainError(f"no fake /proc/cpuinfo for qemu cpu {cpu!r}; known: "
                                 f"{', '.join(sorted(_CORES))}", code="E_QEMU_CPU")
        final = self.path / "views" / f"{cpu}-{cores}c"
        if (final / ".complete").exists():
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
        for entry in sorted(self.root.iterdir()):
            if entry.name not in ("proc", "sys"):
                os.symlink(os.path.relpath(entry, tmp), tmp / entry.name)
        _write_fake_cpu(tmp, cpu, cores)
        (tmp / ".complete").write_text("ok\n")
        try:
            os.rename(tmp, final)
        except OSError:  # another process won the race; theirs is identical
            shutil.rmtree(tmp, ignore_errors=True)
        return final

    def qemu_argv(self, cpu: str, cores: int = 2) -> list[str]:
        """How to start python3.11 on the emulated device (append the script and its args)."""
        return [ensure_qemu(), "-cpu", qemu_cpu_arg(cpu), "-L", str(self.view(cpu, cores)),
                "-E", f"PYTHONPATH={self.site}", "-E", "PYTHONDONTWRITEBYTECODE=1",
                str(self.python)]

    def size_mb(self) -> float:
        total = sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file() and not p.is_symlink())
        return round(total / 2**20, 1)


def _write_fake_cpu(root: Path, cpu: str, cores: int) -> None:
    implementer, variant, part, revision, features = _CORES[cpu]
    blocks = [f"processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: {features}\n"
              f"CPU implementer\t: {implementer}\nCPU architecture: 8\nCPU variant\t: {variant}\n"
              f"CPU part\t: {part}\nCPU revision\t: {revision}\n" for i in range(cores)]
    (root / "proc").mkdir(parents=True, exist_ok=True)
    (root / "proc" / "cpuinfo").write_text("\n".join(blocks) + "\n")
    cpu_dir = root / "sys" / "devices" / "system" / "cpu"
    cpu_dir.mkdir(parents=True, exist_ok=True)
    span = "0" if cores == 1 else f"0-{cores - 1}"
    for name in ("possible", "present", "online"):
        (cpu_dir / name).write_text(span + "\n")


def _run(argv: list[str], *, cwd: Path | None = None, what: str, code: str = "E_SYSROOT_BUILD") -> str:
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise ToolchainError(f"{what} failed (exit {proc.returncode}): {' | '.join(tail)}",
                             code=code, details={"argv": argv})
    return proc.stdout


def apt_install(package: str) -> str | None:
    """``apt-get install package`` (again after ``apt-get update`` if the first try fails); needs
    root. None on success, else apt-get's error."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", package]
    if subprocess.run(cmd, capture_output=True, env=env).returncode == 0:
        return None
    subprocess.run(["apt-get", "update"], capture_output=True, env=env)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    return None if proc.returncode == 0 else proc.stderr.strip()[-300:]


def ensure_qemu() -> str:
    """Path of qemu-aarch64-static, installing Debian's qemu-user-static when it is missing."""
    found = shutil.which(QEMU)
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise ToolchainError(f"{QEMU} not found; install it with `apt-get install qemu-user-static`",
                             code="E_QEMU_MISSING")
    failed = apt_install("qemu-user-static")
    if failed is not None:
        raise ToolchainError(f"apt-get install qemu-user-static failed: {failed}", code="E_QEMU_MISSING")
    found = shutil.which(QEMU)
    if not found:
        raise ToolchainError(f"{QEMU} still not on PATH after installing qemu-user-static",
                             code="E_QEMU_MISSING")
    return found


def _apt_options(work: Path) -> list[str]:
    mirror = os.environ.get("SLMPACK_DEBIAN_MIRROR", "http://deb.debian.org/debian")
    security = os.environ.get("SLMPACK_DEBIAN_SECURITY", "http://deb.debian.org/debian-security")
    keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
    signed = f" signed-by={keyring}" if Path(keyring).exists() else ""
    (work / "sources.list").write_text(
        f"deb [arch=arm64{signed}] {mirror} {SUITE} main\n"
        f"deb [arch=arm64{signed}] {mirror} {SUITE}-updates main\n"
        f"deb [arch=arm64{signed}] {security} {SUITE}-security main\n")
    for sub in ("lists/partial", "cache/archives/partial", "parts", "prefs"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    (work / "status").write_text("")
    return ["-oAPT::Architecture=arm64", "-oAPT::Architectures=arm64",
            f"-oDir::State::Lists={work / 'lists'}", f"-oDir::State::status={work / 'status'}",
            f"-oDir::Cache={work / 'cache'}", f"-oDir::Etc::SourceList={work / 'sources.list'}",
            f"-oDir::Etc::SourceParts={work / 'parts'}", f"-oDir::Etc::PreferencesParts={work / 'prefs'}",
            "-oAPT::Sandbox::User=root", "-oAcquire::Retries=3", "-qq"]


def _fetch_debs(work: Path, root: Path) -> list[str]:
    opts = _apt_options(work)
    _run(["apt-get", *opts, "update"], what="apt-get update (arm64 lists)")
    debs = work / "debs"
    debs.mkdir()
    _run(["apt-get", *opts, "download", *DEB_PACKAGES], cwd=debs, what="apt-get download (arm64)")
    names = sorted(p.name for p in debs.glob("*.deb"))
    for name in names:
        _run(["dpkg", "-x", str(debs / name), str(root)], what=f"dpkg -x {name}")
    return names


def _fetch_wheels(work: Path, site: Path) -> list[str]:
    wheels = work / "wheels"
    platforms = [arg for p in WHEEL_PLATFORMS for arg in ("--platform", p)]
    _run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
          "--only-binary=:all:", "--python-version", PYTHON, "--implementation", "cp", *platforms,
          "-d", str(wheels), *WHEELS], what="pip download (aarch64 wheels)")
    names = sorted(p.name for p in wheels.glob("*.whl"))
    for name in names:
        with zipfile.ZipFile(wheels / name) as zf:
            zf.extractall(site)
    for data_dir in site.glob("*.data"):  # wheel .data/{purelib,platlib} belong in site/
        for scheme in ("purelib", "platlib"):
            if (data_dir / scheme).is_dir():
                shutil.copytree(data_dir / scheme, site, dirs_exist_ok=True)
        shutil.rmtree(data_dir)
    return names


def _verify(path: Path) -> str:
    view = Sysroot(path).view("cortex-a76", 2)
    argv = [ensure_qemu(), "-cpu", "cortex-a76", "-L", str(view), "-E", f"PYTHONPATH={path / 'site'}",
            str(path / "root" / "usr" / "bin" / f"python{PYTHON}"), "-c",
            "import onnxruntime, numpy, platform, cryptography; "
            "from cryptography.hazmat.primitives.asymmetric import ec; ec.generate_private_key(ec.SECP256R1()); "
            "print(platform.machine(), onnxruntime.__version__, numpy.__version__, cryptography.__version__)"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0 or "aarch64" not in proc.stdout:
        raise ToolchainError(f"sysroot check failed (exit {proc.returncode}): "
                             f"{(proc.stderr or proc.stdout).strip()[-400:]}", code="E_SYSROOT_BUILD")
    return proc.stdout.strip()


def ensure_sysroot(cache: Path | None = None, *, log=None) -> Sysroot:
    """Build (once) and return the cached aarch64 sysroot. Safe to call concurrently."""
    qemu = ensure_qemu()
    base = Path(cache) if cache else cache_root()
    base.mkdir(parents=True, exist_ok=True)
    final = base / f"sysroot-{build_key()}"
    if (final / "stamp.json").exists():
        return Sysroot(final)
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (final / "stamp.json").exists():
            return Sysroot(final)
        for stale in base.glob(".build-*"):
            shutil.rmtree(stale, ignore_errors=True)
        start = time.monotonic()
        tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=base))
        try:
            (tmp / "root").mkdir()
            (tmp / "site").mkdir()
            work = tmp / "work"
            work.mkdir()
            if log:
                log("fetching arm64 Debian packages")
            debs = _fetch_debs(work, tmp / "root")
            if log:
                log("fetching aarch64 wheels")
            wheels = _fetch_wheels(work, tmp / "site")
            download_mb = round(sum(f.stat().st_size for f in work.rglob("*.*")
                                    if f.suffix in (".deb", ".whl")) / 2**20, 1)
            shutil.rmtree(work)
            _write_fake_cpu(tmp / "root", "cortex-a76", 2)  # a plain `-L root` works too
            check = _verify(tmp)
            stamp = {"key": build_key(), "suite": SUITE, "python": PYTHON, "debs": debs,
                     "wheels": wheels, "check": check, "qemu": qemu, "download_mb": download_mb,
                     "build_seconds": round(time.monotonic() - start, 1)}
            (tmp / "stamp.json").write_text(json.dumps(stamp, indent=2, sort_keys=True) + "\n")
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return Sysroot(final)
