"""Validate and time one encoder package on the machine this runs on (the device runner's encoder
path; ``device.validate`` dispatches here after reading the manifest and its identity).

Steps, each before the next: the typed ``EncoderManifest`` (file fields inside ``files``); the
target must have a device runtime here (``require_device_runtime``: ONNX and LiteRT; Core ML and
ExecuTorch are refused with ``E_DEVICE_RUNTIME_UNAVAILABLE``); every file's sha256 (a package
that fails is never run); the tolerance the target declares (``tolerance.checked_encoder``: a
manifest whose ``tolerance`` differs is refused); then the package's padded test-vector batch
through the artifact's own runtime (``encoder.open_backend``: no tokenizer, no torch), compared
with the package's expected output (``encoder_check.vector_metrics``: max |Δ| vs the bound, cosine
or label agreement). Pooled outputs (embeddings, logits) are returned as ``outputs`` so the host
recomputes the comparison itself rather than trusting these numbers.
"""
from __future__ import annotations

import platform
import time
from pathlib import Path

from . import ladder, native_et, safetensors, tolerance
from .device_info import base_result, checked_files, peak_rss_mb, runtime_record
from .encoder import open_backend
from .encoder_check import POOLED, run_vectors, vector_metrics
from .encoder_manifest import EncoderManifest
from .errors import ErrorCode, UnsupportedError
from .records import TargetName

ENCODER_FIELDS = ("kind", "output", "vectors", "outputs", "load_ms", "run_ms", "rows_per_s")

# targets whose encoder packages have no runtime a device can run without torch or Apple's OS
NO_DEVICE_RUNTIME = {
    TargetName.EXECUTORCH: "ExecuTorch's Python runtime takes torch tensors, and PyPI's aarch64 torch 2.13.0 is a "
                           "CUDA build: run it through the torch-free libslm_et.so (device_tests/et_runtime.py; "
                           "the runner's --et-lib), which the harness pushes to aarch64 Linux devices",
    TargetName.COREML: "Core ML runs on Apple devices only; an aarch64 Linux device has no Core ML runtime",
}  # (Core ML on an Apple device runs through the kit's Core ML backend)


def require_device_runtime(target: TargetName, apple: bool | None = None, et_native: bool | None = None) -> None:
    """Refuse (``E_DEVICE_RUNTIME_UNAVAILABLE``) an encoder target the device runner cannot run there:
    ExecuTorch without the torch-free runtime (``et_native``: default, ``SLMPACK_ET_LIB`` is set here),
    Core ML off Apple (``apple``: default, this machine)."""
    if apple is None:
        apple = platform.system() == "Darwin"
    if et_native is None:
        et_native = native_et.selected() is not None
    allowed = (target is TargetName.COREML and apple) or (target is TargetName.EXECUTORCH and et_native)
    if target in NO_DEVICE_RUNTIME and not allowed:
        raise UnsupportedError(f"encoder packages of target {target.value} cannot run on the device: "
                               f"{NO_DEVICE_RUNTIME[target]}", ErrorCode.E_DEVICE_RUNTIME_UNAVAILABLE)


def validate_encoder(pkg: Path, doc: dict, identity: str, threads: int = 0) -> dict:
    manifest = EncoderManifest.from_json(doc)
    require_device_runtime(manifest.target)
    result = base_result(pkg, identity, manifest.target.value, ENCODER_FIELDS)
    result.update(kind="encoder", output=manifest.encoder.output.value)
    if not checked_files(pkg, manifest, result):  # never execute an artifact the manifest does not describe
        return result
    tol = tolerance.checked_encoder(manifest)
    result["tolerance"] = {"atol": tol.atol, "rtol": tol.rtol}
    vectors = safetensors.load(pkg / manifest.vectors_file)
    m = manifest.to_json()
    t0 = time.perf_counter()
    backend = open_backend(pkg, m, threads)
    t1 = time.perf_counter()
    got = run_vectors(backend, vectors)
    t2 = time.perf_counter()
    runtime = m.get("runtime") or {}
    result["runtime"] = runtime_record(backend.runtime_name, backend.runtime_version, runtime.get("min_version"))
    vec = vector_metrics(result["output"], vectors, got, tol)
    rows = int(vectors["input_ids"].shape[0])
    result.update(vectors=vec, load_ms=round((t1 - t0) * 1e3, 2), run_ms=round((t2 - t1) * 1e3, 2),
                  rows_per_s=round(rows / max(t2 - t1, 1e-9), 3))
    result["peak_rss_mb"], result["rss_source"] = peak_rss_mb()
    labels_ok = vec.get("label_agreement", 1.0) == 1.0  # fp32 classification: every label the reference's
    result["ok"] = bool(vec["passed"] and labels_ok and result["runtime"]["version_ok"])
    if not result["ok"]:
        result["error"] = {"code": ErrorCode.E_VALIDATION.value, "message": "device outputs differ from the test vectors"}
    result = ladder.rounded(result)
    if result["output"] in POOLED:  # exact float32 values (after rounding the report numbers)
        result["outputs"] = [[float(v) for v in row] for row in got.reshape(got.shape[0], -1)]
    return result


__all__ = ["validate_encoder", "require_device_runtime", "NO_DEVICE_RUNTIME", "ENCODER_FIELDS"]
