"""What the on-device runner reports about the machine it runs on, shared by the decoder and the
encoder paths (standard library only): machine facts, peak RSS, the runtime and its version check,
and the package's identity + file integrity, read before anything of the package is run."""
from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any

from .errors import ErrorCode
from .integrity import check_files, read_document

RUNNER_VERSION = 2


# aarch64 HWCAP / HWCAP2 bits (Linux uapi asm/hwcap.h) that decide which kernels XNNPACK, KleidiAI and
# MLAS run; the runtimes read them from the auxiliary vector, not from /proc/cpuinfo
_HWCAP = {"fphp": 1 << 9, "asimdhp": 1 << 10, "asimddp": 1 << 20, "sve": 1 << 22}
_HWCAP2 = {"sve2": 1 << 1, "i8mm": 1 << 13, "bf16": 1 << 14, "sme": 1 << 23, "sme2": 1 << 37}
AT_HWCAP, AT_HWCAP2 = 16, 26


def hwcaps() -> list[str] | None:
    """The ISA features the kernel (or qemu-user) reports in /proc/self/auxv, on aarch64 Linux."""
    if platform.machine() != "aarch64":
        return None
    try:
        return decode_hwcaps(Path("/proc/self/auxv").read_bytes())
    except OSError:
        return None


def decode_hwcaps(auxv: bytes) -> list[str]:
    """The named bits of AT_HWCAP / AT_HWCAP2 in a little-endian 64-bit auxiliary vector."""
    import struct

    pairs = dict(struct.iter_unpack("<QQ", auxv[:len(auxv) // 16 * 16]))
    h1, h2 = pairs.get(AT_HWCAP, 0), pairs.get(AT_HWCAP2, 0)
    return [n for n, b in _HWCAP.items() if h1 & b] + [n for n, b in _HWCAP2.items() if h2 & b]


PR_SVE_GET_VL, PR_SVE_VL_LEN_MASK = 51, 0xFFFF


def sve_vector_bytes() -> int | None:
    """This thread's SVE vector length in bytes (prctl PR_SVE_GET_VL), where the CPU has SVE: kernels
    size their loops by it, so it is part of what ran (128-bit, 16 bytes, on shipping phone cores)."""
    try:
        import ctypes

        vl = ctypes.CDLL(None, use_errno=True).prctl(PR_SVE_GET_VL, 0, 0, 0, 0)
    except (OSError, AttributeError):
        return None
    return vl & PR_SVE_VL_LEN_MASK if vl > 0 else None


def machine_info() -> dict:
    info = {"machine": platform.machine(), "system": platform.system(), "release": platform.release(),
            "python": platform.python_version(), "cpu_count": os.cpu_count()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("CPU implementer", "CPU part", "Features", "model name") and key not in info:
                info[key] = value.strip()
    except OSError:
        pass
    caps = hwcaps()
    if caps is not None:
        info["hwcaps"] = caps
        if "sve" in caps:
            info["sve_vector_bytes"] = sve_vector_bytes()
    return info


def peak_rss_mb():
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1), "VmHWM"
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return round(rss / (2**20 if sys.platform == "darwin" else 1024), 1), "ru_maxrss"
    except (ImportError, OSError):
        return None, None


def version_tuple(v: str):
    return tuple(int(p) if p.isdigit() else 0 for p in str(v).replace("-", ".").split(".")[:3])


def runtime_record(name: str, version: str, min_version: str | None) -> dict:
    """The runtime that ran the artifact, and whether it is at least the manifest's minimum."""
    return {"name": name, "version": version, "min_version": min_version,
            "version_ok": not min_version or version_tuple(version) >= version_tuple(min_version)}


def base_result(pkg: Path, identity: str, target: str, fields: tuple[str, ...]) -> dict:
    """The runner's document before anything is run: every key present (``fields`` are None)."""
    return {"ok": False, "runner_version": RUNNER_VERSION, "package": Path(pkg).name, "identity": identity,
            "target": target, "runtime": None, "machine": machine_info(), "hashes_ok": None, "bad_files": [],
            "tolerance": None, **{k: None for k in fields}, "peak_rss_mb": None, "rss_source": None, "error": None}


def checked_files(pkg: Path, manifest: Any, result: dict) -> bool:
    """Record the integrity check in ``result``; False (and ``E_PACKAGE_INTEGRITY``) if any file is
    changed, missing, extra or a link: such an artifact is never executed."""
    bad = check_files(pkg, manifest)
    result["hashes_ok"], result["bad_files"] = not bad, [b.to_json() for b in bad]
    if bad:
        result["error"] = {"code": ErrorCode.E_PACKAGE_INTEGRITY.value,
                           "message": f"{len(bad)} file(s) do not match the manifest"}
    return not bad


__all__ = ["RUNNER_VERSION", "machine_info", "peak_rss_mb", "version_tuple", "runtime_record", "base_result",
           "checked_files", "read_document"]
