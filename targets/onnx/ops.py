"""Declared support of the ONNX target: model features it can export, checked before slow work."""
from __future__ import annotations

from slmpack.exporter.spec import ModelSpec
from slmpack.targets.base import Unsupported


def unsupported_features(spec: ModelSpec, options, plan=None) -> list[Unsupported]:
    out: list[Unsupported] = []
    if plan is not None and not getattr(plan, "is_float", True):
        out.append(Unsupported("quantization", "the ONNX encoding of QuantPlans is not implemented yet"))
    return out
