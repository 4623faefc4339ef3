"""What the host reads of a package before pushing it, and how it judges the device's JSON.

``read_package`` checks the package is safe to push (a valid typed manifest, decoder or encoder,
with file fields inside ``files``; regular files only, no symlinks) and reads its test vectors
with the kit the device runs. The verdicts are recomputed here where they can be, never taken
from the device's own ``ok``: both kinds check the package identity (sha256 of the canonical
manifest, as the host reads it), every file's sha256 verified on the device, the runtime version
and, when required, the signature. Decoders then need logits within tolerance and greedy tokens
equal to the reference (compared here). Encoders need the test-vector batch within the target's
declared tolerance, recomputed here from the device's ``outputs`` for pooled outputs (embeddings,
logits), with every label equal to the reference's (logits) or the fp32 cosine bound
(embeddings); a ``last_hidden_state`` package's per-token output is not shipped back, so its
tolerance verdict is the device's.

Greedy tokens are a check only where the target declares the package exact (``Tolerance.
greedy_exact``: fp32 and weight-only plans computed in fp32). A package with lossy arithmetic
(fp16, dynamic int8 activations) legitimately takes another token at a near-tie on a CPU whose
kernels round differently (measured 2026-12-03: the demo's ONNX 8da4w package leaves the x86
greedy path on the emulated A76 (sdot) and qemu-max (i8mm) profiles, with logits within the
declared bound); there ``greedy_record`` records the first divergence instead.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slmpack.runtime import integrity, safetensors, tolerance
from slmpack.runtime.errors import SlmpackError
from slmpack.runtime.encoder_check import POOLED, vector_metrics
from slmpack.runtime.encoder_manifest import EncoderManifest


class PackageKind(str, enum.Enum):
    DECODER = "decoder"
    ENCODER = "encoder"


@dataclass(frozen=True)
class HostPackage:
    """A package as the host read it: its typed manifest (and that as JSON), identity and vectors."""

    path: Path
    record: object              # Manifest | EncoderManifest
    manifest: dict
    identity: str
    vectors: dict

    @property
    def kind(self) -> PackageKind:
        return PackageKind.ENCODER if isinstance(self.record, EncoderManifest) else PackageKind.DECODER

    @property
    def target(self) -> str:
        return self.manifest["target"]


def read_package(pkg: Path) -> HostPackage:
    record = integrity.check_safe(pkg)
    _, identity = integrity.read_document(pkg)
    doc = record.to_json()
    return HostPackage(Path(pkg), record, doc, identity, safetensors.load(pkg / doc["test_vectors"]["file"]))


def common_checks(package: HostPackage, result: dict, signature_required: bool = False) -> dict:
    signed = {"signature_ok": result.get("signature_ok") is True} if signature_required else {}
    return {**signed,
            "identity_ok": result.get("identity") == package.identity,
            "hashes_ok": result.get("hashes_ok") is True,
            "runtime_version_ok": bool((result.get("runtime") or {}).get("version_ok"))}


def compare_on_host(package: HostPackage, result: dict, signature_required: bool = False) -> dict:
    """Host verdicts on the device's JSON, by the package's kind."""
    checks = common_checks(package, result, signature_required)
    if package.kind is PackageKind.ENCODER:
        return {**checks, **encoder_checks(package, result)}
    checks.update(prefill_within_tolerance=result.get("prefill_within_tolerance") is True,
                  decode_within_tolerance=result.get("decode_within_tolerance") is True)
    greedy = greedy_record(package, result)
    if greedy["declared_exact"]:
        checks["greedy_match"] = greedy["match"]
    return checks


def greedy_record(package: HostPackage, result: dict) -> dict:
    """The device's greedy tokens vs the reference: match, first divergence, and whether the
    target declares this package greedy-exact (then a mismatch fails the cell)."""
    ref = [int(t) for t in package.vectors["greedy_ids"]]
    got = result.get("greedy_ids")
    got = [int(t) for t in got] if isinstance(got, list) and all(isinstance(t, int) for t in got) else None
    try:
        exact = tolerance.for_manifest(package.record).greedy_exact
    except SlmpackError:
        exact = True
    first = None if got is None else next((i for i, (a, b) in enumerate(zip(ref, got)) if a != b),
                                          None if len(ref) == len(got) else min(len(ref), len(got)))
    return {"declared_exact": exact, "match": got == ref, "first_divergence": first, "tokens": len(ref)}


def device_outputs(package: HostPackage, result: dict) -> np.ndarray | None:
    """The device's pooled outputs for the test-vector batch, shaped like ``expected`` (or None)."""
    want = package.vectors["expected"]
    try:
        got = np.asarray(result.get("outputs"), np.float64)
    except (TypeError, ValueError):
        return None
    if got.shape != want.shape or not np.isfinite(got).all():
        return None
    return got.astype(np.float32)


def encoder_metrics(package: HostPackage, result: dict) -> dict | None:
    """The test-vector comparison, recomputed on the host from the device's outputs (pooled outputs)."""
    output = package.record.encoder.output.value
    got = device_outputs(package, result) if output in POOLED else None
    if got is None:
        return None
    try:  # the bound the target declares for this package, whatever its manifest says
        tol = tolerance.for_encoder(package.record)
    except SlmpackError:
        return None
    return vector_metrics(output, package.vectors, got, tol)


def encoder_checks(package: HostPackage, result: dict) -> dict:
    from slmpack.exporter.encoder.ladder import FP32

    output = package.record.encoder.output.value
    if output not in POOLED:  # per-token outputs stay on the device: its verdict
        return {"vectors_within_tolerance": (result.get("vectors") or {}).get("passed") is True}
    m = encoder_metrics(package, result)
    if m is None:
        return {"vectors_within_tolerance": False, "outputs_returned": False}
    checks = {"vectors_within_tolerance": m["passed"]}
    if output == "logits":
        checks["labels_match"] = m["label_agreement"] == FP32.label_agreement
    else:
        checks["cosine_ok"] = m["min_cosine"] >= FP32.min_cosine
    return checks


__all__ = ["PackageKind", "HostPackage", "read_package", "common_checks", "compare_on_host", "greedy_record",
           "encoder_checks",
           "encoder_metrics", "device_outputs"]
