"""Run packages on devices: push package + runner, run, fetch the JSON, judge it on the host.

``run_device_test(packages, devices)`` is the matrix (every package on every device). For each
pair: the device must list a runtime for the package's format and the package must fit (at the
context the test uses); then the transport pushes both, runs ``device_runner.py``, fetches its
JSON, and the host compares it with the package's own test vectors and tolerance: every file's
sha256 verified on the device, logits within tolerance, greedy tokens equal to the reference.
With ``signature_key`` (a PEM public key) the package's signature (``PKG.sig`` beside it, pushed
when present) and the key go too, and the runner runs with ``--require-signature``: the device
itself refuses a package whose signature is missing or does not verify, and the host requires
its ``signature_ok``. Encoder packages take the same path (identity, sha256 of every file,
signature) and are judged on their test-vector batch (``host_checks.py``); their fit is weights +
activations at the vectors' batch × sequence (``fit_encoder.py``), and an encoder target the device
runner cannot run there (ExecuTorch: its runtime needs torch; Core ML off Apple) is skipped with
``E_DEVICE_RUNTIME_UNAVAILABLE`` before anything is pushed. An ExecuTorch decoder on an aarch64
Linux device (qemu, ssh) runs on the torch-free runtime (``et_runtime.py``), pushed beside the
runner as ``et-runtime/`` and named with ``--et-lib``.
"""
from __future__ import annotations

import json
import os
import platform
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from slmpack.errors import BadInputError, SlmpackError, UnsupportedError
from slmpack.runtime import integrity
from slmpack.runtime.device_encoder import require_device_runtime
from slmpack.runtime.records import TargetName

from . import device_runner
from .fit import estimate, load_facts
from .fit_encoder import estimate_encoder
from .host_checks import HostPackage, PackageKind, compare_on_host, greedy_record, read_package
from .profiles import DeviceProfile, load_registry
from .report import Report
from .transports import Transport, make_transport

RUNNER = Path(device_runner.__file__)
RUNNER_NAME = "device_runner.py"
ET_RUNTIME_DIR = "et-runtime"
PASSED, FAILED, SKIPPED, ERROR = "passed", "failed", "skipped", "error"


@dataclass(frozen=True)
class DeviceResult:
    package: str
    device: str
    transport: str
    status: str  # passed | failed | skipped | error
    reason: str = ""
    checks: dict = field(default_factory=dict)  # host-side verdicts, each a bool
    fit: dict | None = None
    device_json: dict | None = None  # what the runner printed
    transport_info: dict = field(default_factory=dict)
    wall_s: float = 0.0
    kind: PackageKind = PackageKind.DECODER

    @property
    def ok(self) -> bool:
        return self.status == PASSED

    def to_json(self) -> dict:
        return {**asdict(self), "kind": self.kind.value, "ok": self.ok}


def _parse(stdout: str) -> dict | None:
    for line in reversed(stdout.strip().splitlines()):
        try:
            doc = json.loads(line)
            return doc if isinstance(doc, dict) else None
        except json.JSONDecodeError:
            continue
    return None


def _fetch_json(transport: Transport, remote_name: str, raw_dir: Path | None, local_name: str) -> dict | None:
    with tempfile.TemporaryDirectory(prefix="slmpack-result-") as tmp:
        local = (raw_dir or Path(tmp)) / local_name
        try:
            transport.fetch(remote_name, local)
            doc = json.loads(local.read_text())
        except (SlmpackError, OSError, json.JSONDecodeError):
            return None
    return doc if isinstance(doc, dict) else None


def is_apple(profile: DeviceProfile) -> bool:
    os_name = profile.os.lower()
    return "ios" in os_name or "macos" in os_name or (os_name == "auto" and platform.system() == "Darwin")


def fit_for(package: HostPackage, profile: DeviceProfile):
    """The fit estimate at what the test will run: a decoder's context, an encoder's vector batch."""
    facts = load_facts(package.path)
    if package.kind is PackageKind.ENCODER:
        rows, width = package.vectors["input_ids"].shape
        return estimate_encoder(facts, profile, int(width), int(rows))
    return estimate(facts, profile, context_needed(package.manifest, package.vectors))


def context_needed(manifest: dict, vectors: dict, max_new: int = 32) -> int:
    need = max(len(vectors["prompt_ids"]) + len(vectors["decode_ids"]),
               len(vectors["greedy_prompt_ids"]) + max_new)
    max_ctx = int((manifest.get("model") or {}).get("max_context") or need)
    return min(need, max_ctx)


def run_one(pkg: Path, profile: DeviceProfile, transport: Transport, *, index: int = 0,
            timeout: float = 1800, raw_dir: Path | None = None, runner_pushed: bool = False,
            signature_key: Path | None = None) -> DeviceResult:
    """One package on one device through an open transport."""
    start = time.monotonic()
    package = read_package(pkg)
    base = dict(package=pkg.name, device=profile.name, transport=transport.name, kind=package.kind)
    fmt = package.target
    if package.kind is PackageKind.ENCODER:
        try:
            require_device_runtime(TargetName(fmt), is_apple(profile), et_runtime_applies(transport, profile, fmt))
        except UnsupportedError as exc:  # a typed refusal, before anything is pushed
            return DeviceResult(**base, status=SKIPPED, reason=f"{exc.code}: {exc}")
    if profile.supports(fmt) is None:
        return DeviceResult(**base, status=SKIPPED, reason=f"{profile.name} lists no runtime for format {fmt!r}")
    fit = fit_for(package, profile)
    if not fit.fits:
        return DeviceResult(**base, status=SKIPPED, reason=f"E_FIT_TOO_BIG: {fit.message()}", fit=fit.to_json())
    try:
        info = transport.describe()
        if not runner_pushed:
            transport.push(RUNNER, RUNNER_NAME)
            with tempfile.TemporaryDirectory(prefix="slmpack-kit-") as tmp:
                transport.push(device_runner.stage_kit(Path(tmp)), device_runner.KIT)
        # a fresh result name per run: a stale file from an earlier run must never be read back
        remote_pkg, out_name = f"pkg-{index}-{pkg.name}", f"result-{index}-{uuid.uuid4().hex[:8]}.json"
        transport.push(pkg, remote_pkg)
        signed = []
        if signature_key is not None:
            sig = pkg.with_name(pkg.name + ".sig")
            if sig.is_file():  # a missing one is for the device to refuse
                transport.push(sig, remote_pkg + ".sig")
            transport.push(signature_key, f"signing-key-{index}.pub")
            signed = ["--require-signature", "--public-key", f"signing-key-{index}.pub"]
        et_args = push_et_runtime(transport, profile, fmt)
        if et_args:
            info = {**info, "executorch_runtime": "torch-free libslm_et.so (device_tests/et_runtime.py)"}
        threads = profile.cpu.cores
        if transport.name == "qemu":  # emulated cores are host threads: do not oversubscribe
            threads = min(threads, os.cpu_count() or 1)
        res = transport.run([*transport.python_argv(), RUNNER_NAME, remote_pkg, "--out", out_name,
                             "--threads", str(threads), *signed, *et_args], timeout=timeout)
        doc = _fetch_json(transport, out_name, raw_dir, f"{profile.name}--{pkg.name}.json") or _parse(res.stdout)
        if doc is None:
            return DeviceResult(**base, status=ERROR, fit=fit.to_json(), transport_info=info,
                                reason=f"runner exit {res.rc}, no JSON: {res.stderr.strip()[-400:]}",
                                wall_s=round(time.monotonic() - start, 2))
    except UnsupportedError as exc:  # e.g. Core ML on Linux: this host cannot run it, not a failure
        return DeviceResult(**base, status=SKIPPED, reason=f"{exc.code}: {exc}", fit=fit.to_json(),
                            transport_info=transport.describe(), wall_s=round(time.monotonic() - start, 2))
    except SlmpackError as exc:
        return DeviceResult(**base, status=ERROR, reason=f"{exc.code}: {exc}", fit=fit.to_json(),
                            wall_s=round(time.monotonic() - start, 2))
    checks = compare_on_host(package, doc, signature_key is not None)
    if package.kind is PackageKind.DECODER:
        doc = {**doc, "host_greedy": greedy_record(package, doc)}
    failed = [k for k, v in checks.items() if not v]
    err = doc.get("error") or {}
    if err.get("code") in ("E_RUNTIME", "E_BAD_INPUT", "E_RUNTIME_MISSING", "E_DEVICE_RUNTIME_UNAVAILABLE"):  # the runner could not do its job
        status, reason = ERROR, f"{err.get('code')}: {err.get('message')}"
    else:
        status = FAILED if failed else PASSED
        reason = f"failed checks: {', '.join(failed)}" if failed else ""
        if failed and err.get("code") == "E_SIGNATURE_INVALID":
            reason += f" ({err['code']}: {err.get('message')})"
    return DeviceResult(**base, status=status, reason=reason, checks=checks, fit=fit.to_json(),
                        device_json=doc, transport_info=info, wall_s=round(time.monotonic() - start, 2))


def et_runtime_applies(transport: Transport, profile: DeviceProfile, fmt: str) -> bool:
    """ExecuTorch on an aarch64 Linux device (qemu, ssh) runs on the torch-free runtime. An Android
    device (adb: bionic, not glibc) and Apple devices keep ExecuTorch's own app runtimes."""
    return fmt == TargetName.EXECUTORCH.value and profile.arch == "aarch64" and transport.name in ("qemu", "ssh")


def push_et_runtime(transport: Transport, profile: DeviceProfile, fmt: str) -> list[str]:
    """Where ``et_runtime_applies``: push the torch-free runtime (built once on the host, cached)
    and return the runner's ``--et-lib`` argument. A host that cannot build it (no cross compiler)
    raises ``E_ET_RUNTIME_BUILD``: an error for that cell only."""
    if not et_runtime_applies(transport, profile, fmt):
        return []
    from .et_runtime import ensure_et_runtime

    transport.push(ensure_et_runtime("aarch64").path, ET_RUNTIME_DIR)
    return ["--et-lib", f"{ET_RUNTIME_DIR}/libslm_et.so"]


def run_device_test(packages: Sequence[str | Path], devices: Sequence[str | DeviceProfile],
                    transport: str | Transport | None = None, *, profile_dirs=(), timeout: float = 1800,
                    out_dir: str | Path | None = None, transport_options: dict | None = None,
                    signature_key: str | Path | None = None) -> Report:
    """Every package on every device. ``transport``: an open Transport used for all devices, a
    transport name for all devices, or None for each profile's default. Writes the report to
    ``out_dir`` when given (report.json, report.md, report.html). ``signature_key``: require every
    package's signature to verify on the device with this PEM public key."""
    pkgs = [Path(p).absolute() for p in packages]
    key = Path(signature_key).absolute() if signature_key is not None else None
    if key is not None and (key.is_symlink() or not key.is_file()):
        raise BadInputError(f"--public-key {key}: not a regular file", "E_SIGNATURE_KEY")
    for p in pkgs:  # every package is checked on the host first (no symlink is ever pushed)
        integrity.check_safe(p)
    registry = load_registry(profile_dirs) if any(isinstance(d, str) for d in devices) else None
    profiles = [d if isinstance(d, DeviceProfile) else registry.get(d) for d in devices]
    raw_dir = Path(out_dir) / "raw" if out_dir else None  # the device JSONs, kept with the report
    if raw_dir:
        raw_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for profile in profiles:
        shared = isinstance(transport, Transport)
        try:
            tr = transport if shared else make_transport(transport or profile.default_transport, profile,
                                                         **(transport_options or {}))
        except SlmpackError as exc:
            results += [DeviceResult(p.name, profile.name, str(transport or profile.default_transport), ERROR,
                                     reason=f"{exc.code}: {exc}") for p in pkgs]
            continue
        try:
            pushed = False
            for i, pkg in enumerate(pkgs):
                result = run_one(pkg, profile, tr, index=i, timeout=timeout, raw_dir=raw_dir,
                                 runner_pushed=pushed, signature_key=key)
                pushed = pushed or result.device_json is not None
                results.append(result)
        finally:
            if not shared:
                tr.cleanup()
    report = Report(results)
    if out_dir:
        report.write(out_dir)
    return report
