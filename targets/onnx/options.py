"""ONNX target options (frozen; validated on construction)."""
from __future__ import annotations

from dataclasses import dataclass

from slmpack.errors import BadInputError

MIN_OPSET, MAX_OPSET = 18, 23


@dataclass(frozen=True)
class OnnxOptions:
    opset: int = 20
    # models larger than this keep their weights in model.onnx.data (as onnxruntime-genai's builder
    # does): ORT then reads tensors straight from that file instead of first parsing one big
    # protobuf, which measured 1.22x instead of 1.44x (artifact + KV) peak RSS on SmolLM-135M
    # (bench/results/perf-2026-11-22.md). Protobuf's hard limit is 2 GiB anyway.
    external_data_threshold_bytes: int = 64 << 20
    optimize: bool = True                           # onnxscript graph optimizer (constant folding etc.)

    def __post_init__(self):
        if isinstance(self.external_data_threshold_bytes, bool) or not isinstance(
                self.external_data_threshold_bytes, int) or not 0 <= self.external_data_threshold_bytes <= 2 << 30:
            raise BadInputError("invalid option external_data_threshold_bytes: must be an integer in 0..2 GiB, got "
                                f"{self.external_data_threshold_bytes!r}", "E_CONFIG",
                                details={"field": "external_data_threshold_bytes"})
        if not MIN_OPSET <= self.opset <= MAX_OPSET:
            raise BadInputError(f"invalid option opset: must be in {MIN_OPSET}..{MAX_OPSET}, got {self.opset}",
                                "E_CONFIG", details={"field": "opset"})
