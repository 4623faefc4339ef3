"""ONNX target options (frozen; validated on construction)."""
from __future__ import annotations

from dataclasses import dataclass

from slmpack.errors import BadInputError

MIN_OPSET, MAX_OPSET = 18, 23


@dataclass(frozen=True)
class OnnxOptions:
    opset: int = 20
    external_data_threshold_bytes: int = 1 << 30   # weights beyond this go to model.onnx.data
    optimize: bool = True                           # onnxscript graph optimizer (constant folding etc.)

    def __post_init__(self):
        if not MIN_OPSET <= self.opset <= MAX_OPSET:
            raise BadInputError(f"invalid option opset: must be in {MIN_OPSET}..{MAX_OPSET}, got {self.opset}",
                                "E_CONFIG", details={"field": "opset"})
