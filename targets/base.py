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

from slmpack.exporter.kv_cache import CacheLayout


class TargetName(str, enum.Enum):
    ONNX = "onnx"
    EXECUTORCH = "executorch"
    TFLITE = "tflite"
    COREML = "coreml"


@dataclass(frozen=True)
class Tolerance:
    """Declared numerical tolerance of a target vs eager PyTorch, for logits."""

    atol: float
    rtol: float = 0.0
    min_top1: float = 1.0        # ladder (c): fp32 exports must agree on every held-out token
    greedy_exact: bool = True    # ladder (d)


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
    name: TargetName
    cache_layout: CacheLayout
    tolerance: Tolerance
    options_type: type

    def supports(self, spec, options, plan=None) -> list[Unsupported]: ...
    def lower(self, programs, spec, options, out_dir: Path, gen: dict, plan=None) -> Artifact: ...
    def check(self, pkg_dir: Path, manifest: dict) -> list[str]: ...
    def runner(self, pkg_dir: Path, manifest: dict) -> Runner: ...

    # Quantization (optional; the pipeline uses ``hasattr``). A target without
    # ``quant_capabilities`` is refused any plan that quantizes a tensor (E_QUANT_TARGET_UNSUPPORTED),
    # before calibration. ``lower(..., plan=plan)`` receives programs traced from the plan's fake-quant
    # reference and swaps each float weight for its native encoding of the plan's integers
    # (``targets/<t>/quantize.py``); ``readback`` decodes the written artifact and compares with the
    # plan: ``{"passed": bool, "problems": [str], "bit_identical": bool,
    # "max_abs_dequant_deviation": float | None, "tensors": {name: {...}}}``.
    def quant_capabilities(self, options) -> "TargetQuantCapabilities": ...  # noqa: F821
    def readback(self, pkg_dir: Path, plan) -> dict: ...
