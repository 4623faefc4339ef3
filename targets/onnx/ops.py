"""Declared support of the ONNX target: model features it can export, checked before slow work."""
from __future__ import annotations

from slmpack.exporter.spec import ModelSpec
from slmpack.targets.base import Unsupported


def unsupported_features(spec: ModelSpec, options, plan=None) -> list[Unsupported]:
    from slmpack.targets.onnx.quantize import unsupported

    return unsupported(spec, options, plan)  # QuantPlan limits of the ONNX encodings (quantize.py)
