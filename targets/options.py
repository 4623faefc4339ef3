"""Build each target's own frozen options from parsed CLI arguments (each target sees only its own)."""
from __future__ import annotations


def options_for(target: str, args):
    if target == "onnx":
        from slmpack.targets.onnx.options import OnnxOptions

        return OnnxOptions(opset=getattr(args, "opset", 20))
    return None  # the target's defaults
