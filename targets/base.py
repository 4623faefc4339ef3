"""The target protocol: what every backend (ONNX, ExecuTorch, Core ML, LiteRT) provides.

A target receives traced programs plus (later) the QuantPlan and returns an artifact and a
runner; it never re-reads the checkpoint and never validates itself.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Protocol

import numpy as np

from slmpack.exporter.kv_cache import CacheLayout, CacheUpdate
from slmpack.runtime.manifest_parts import IoSignature, KvCacheInfo, Report, RuntimeInfo, TensorSig
from slmpack.runtime.records import Readback, TargetName, Tolerance, freeze


class Consumes(str, enum.Enum):
    """What ``lower`` takes from the tracing stage."""

    EXPORTED_PROGRAM = "exported_program"   # the traced {prefill, decode} programs (ONNX, Core ML)
    MODULE = "module"                       # the wrapped reference module; the target exports it itself


@dataclass(frozen=True)
class Capabilities:
    """What a target can express for given options, declared up front (the test matrix reads it).

    ``precisions``: the float precisions its options accept; ``quant``: what a QuantPlan may ask
    (``None``: no plan that quantizes a tensor); ``separate_adapters``: LoRA adapters can ship as
    files the runtime swaps (``--adapter-mode separate``). Finer limits are the reasons ``preflight`` names."""

    precisions: tuple[str, ...]
    quant: "TargetQuantCapabilities | None"  # noqa: F821
    separate_adapters: bool = False


@dataclass(frozen=True)
class DynamicActivation:
    """How a runtime quantizes one linear's input to int8 at run time."""

    block: int | None = None   # None: per token (the whole row); else per (token, block of input columns)
    symmetric: bool = True     # True: scale = absmax / 127; False: scale = range / 255 and a zero point

    def __post_init__(self):
        if not self.symmetric and self.block is not None:
            raise ValueError("asymmetric dynamic activations are per token (block must be None)")


@dataclass(frozen=True)
class ExecutedQuant:
    """Where the target's runtime executes a QuantPlan with other numerics than the plan's own
    (declared, never measured); the pipeline builds the fake-quant reference the same way, so the
    ladder compares the artifact with what its kernels compute.

    ``activations``: {linear weight name: how its dynamic int8 input is quantized} (absent: per token,
    as the plan's scheme says); ``bf16_scales``: weight names whose group scales the runtime stores
    in bf16 (the reference dequantizes them with the bf16-rounded scales)."""

    activations: Mapping[str, DynamicActivation] = field(default_factory=dict)
    bf16_scales: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Unsupported:
    """One reason a target cannot take this model/options, found before any slow work."""

    what: str
    reason: str

    def __str__(self) -> str:
        return f"{self.what}: {self.reason}"


@dataclass(frozen=True)
class Artifact:
    """What ``lower`` wrote into the staging directory, as the manifest's typed records."""

    primary: str                              # e.g. "model.onnx"
    files: tuple[str, ...]                    # relpaths written by the target (incl. primary)
    io: IoSignature                           # I/O signature (names, dtypes, shapes)
    kv_cache: KvCacheInfo | None              # layout description (None: an encoder, no cache)
    runtime: RuntimeInfo                      # runtime name, minimum version, backends
    report: Report = Report()                 # precision, fusion counts, delegation, opset ...

    def with_readback(self, readback: Readback) -> "Artifact":
        return replace(self, report=replace(self.report, readback=readback))


@dataclass(frozen=True)
class ReferenceRequest:
    """Sample inputs a target wants reference logits for, beyond the package's own test vectors
    (LiteRT: one padded prompt per prefill signature; ExecuTorch: its BundledProgram's cases).
    The pipeline runs the reference: prefill ``prompt`` from position 0, then feed ``decode``, or
    ``greedy_steps`` tokens of the reference's own argmax continuation."""

    name: str
    prompt: tuple[int, ...]
    decode: tuple[int, ...] = ()
    greedy_steps: int = 0


@dataclass(frozen=True)
class ReferenceTrace:
    """What the reference computed for one request: ``prefill_logits`` [S, V], ``decode_logits`` [D, V]."""

    request: ReferenceRequest
    prefill_logits: np.ndarray
    decode_ids: tuple[int, ...]
    decode_logits: np.ndarray


class OwnVectorsOnly:
    """For a target whose package test vectors are all it needs: it requests no reference traces."""

    def reference_requests(self, spec, options, trace_cfg) -> tuple[ReferenceRequest, ...]:
        return ()

    def write_reference(self, pkg_dir: Path, options, traces: tuple[ReferenceTrace, ...]) -> tuple[str, ...]:
        return ()


class Runner(Protocol):
    """Load-and-run protocol shared by host runners, the reference and the device runner.

    ``prefill`` feeds a prompt at positions 0..S-1 (after a reset) or continues at the current
    position; it returns logits for every fed position. ``decode`` feeds one token at ``pos``.
    """

    max_prompt: int

    def prefill(self, ids: np.ndarray) -> np.ndarray: ...       # [S] int -> [S, V] float32
    def decode(self, token: int, pos: int) -> np.ndarray: ...   # -> [V] float32
    def reset(self) -> None: ...


class Target(Protocol):
    """Every member is required (no ``hasattr`` probes anywhere). The pipeline calls, in order:
    ``capabilities`` and ``preflight`` (before any slow work), ``layout``/``consumes``/``cache_update``
    (tracing), ``lower``, ``readback`` (quantized packages), ``reference_requests`` and
    ``write_reference`` (the pipeline runs the reference on the requests; a target never does),
    ``tolerance`` (written into the manifest; the ladder reads it from there), then ``check``,
    ``runner`` and ``extra_vectors`` in the ladder."""

    name: TargetName
    options_type: type
    consumes: Consumes
    cache_update: CacheUpdate

    def layout(self, options) -> CacheLayout: ...
    def capabilities(self, options) -> Capabilities: ...
    def preflight(self, spec, options, plan=None) -> list[Unsupported]: ...
    def lower(self, programs, spec, options, out_dir: Path, gen: dict, plan=None) -> Artifact: ...
    def readback(self, pkg_dir: Path, plan) -> Readback: ...
    def tolerance(self, options, plan=None) -> Tolerance: ...
    # how the runtime executes the plan where that differs from the plan's numerics (dynamic
    # activation blocks / asymmetry, bf16 scales); the pipeline's fake-quant reference follows it
    def executed_quant(self, options, plan) -> ExecutedQuant: ...
    def reference_requests(self, spec, options, trace_cfg) -> tuple[ReferenceRequest, ...]: ...
    # store the reference's answers in the target's own format; returns the files written
    def write_reference(self, pkg_dir: Path, options, traces: tuple[ReferenceTrace, ...]) -> tuple[str, ...]: ...
    def check(self, pkg_dir: Path, manifest: dict) -> list[str]: ...
    def runner(self, pkg_dir: Path, manifest: dict) -> Runner: ...
    # target-specific reference checks beyond the package's test vectors (e.g. one per LiteRT
    # prefill signature); ``None`` when the target has none
    def extra_vectors(self, pkg_dir: Path, manifest: dict, runner: Runner, tol: Tolerance) -> dict | None: ...


__all__ = ["Artifact", "Capabilities", "Consumes", "IoSignature", "KvCacheInfo", "OwnVectorsOnly", "Readback",
           "ReferenceRequest",
           "ReferenceTrace", "Report", "Runner", "RuntimeInfo", "Target", "TargetName", "TensorSig", "Tolerance", "Unsupported", "freeze"]
