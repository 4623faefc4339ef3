"""The target protocol: what every backend (ONNX, ExecuTorch, Core ML, LiteRT) provides.

A target receives traced programs plus (later) the QuantPlan and returns an artifact and a
runner; it never re-reads the checkpoint and never validates itself.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from slmpack.exporter.kv_cache import CacheLayout, CacheUpdate
from slmpack.runtime.records import Readback, TargetName, Tolerance


class Consumes(str, enum.Enum):
    """What ``lower`` takes from the tracing stage."""

    EXPORTED_PROGRAM = "exported_program"   # the traced {prefill, decode} programs (ONNX, Core ML)
    MODULE = "module"                       # the wrapped reference module; the target exports it itself


@dataclass(frozen=True)
class Capabilities:
    """What a target can express for given options, declared up front (the test matrix reads it).

    ``precisions``: the float precisions its options accept; ``quant``: what a QuantPlan may ask
    (``None``: no plan that quantizes a tensor). Finer limits are the reasons ``preflight`` names."""

    precisions: tuple[str, ...]
    quant: "TargetQuantCapabilities | None"  # noqa: F821


@dataclass(frozen=True)
class Unsupported:
    """One reason a target cannot take this model/options, found before any slow work."""

    what: str
    reason: str

    def __str__(self) -> str:
        return f"{self.what}: {self.reason}"


@dataclass
class Artifact:
    """What ``lower`` wrote into the staging directory."""

    primary: str                              # e.g. "model.onnx"
    files: list[str]                          # relpaths written by the target (incl. primary)
    io: dict[str, Any]                        # I/O signature (names, dtypes, shapes)
    kv_cache: dict[str, Any]                  # layout description
    runtime: dict[str, str]                   # {"name", "min_version"}
    report: dict[str, Any] = field(default_factory=dict)  # fusion counts, delegation, opset ...


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
    (tracing), ``lower``, ``readback`` (quantized packages), ``tolerance`` (written into the manifest;
    the ladder reads it from there), then ``check``, ``runner`` and ``extra_vectors`` in the ladder."""

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
    # {linear: block} where the runtime quantizes dynamic int8 activations per (token, block)
    # instead of per token; the pipeline fake-quantizes the reference the same way
    def activation_blocks(self, options, plan) -> dict[str, int]: ...
    def check(self, pkg_dir: Path, manifest: dict) -> list[str]: ...
    def runner(self, pkg_dir: Path, manifest: dict) -> Runner: ...
    # target-specific reference checks beyond the package's test vectors (e.g. one per LiteRT
    # prefill signature); ``None`` when the target has none
    def extra_vectors(self, pkg_dir: Path, manifest: dict, runner: Runner, tol: Tolerance) -> dict | None: ...


__all__ = ["Artifact", "Capabilities", "Consumes", "Readback", "Runner", "Target", "TargetName", "Tolerance",
           "Unsupported"]
