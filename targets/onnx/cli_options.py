"""CLI flags of the ONNX target."""
from __future__ import annotations

from slmpack.targets.onnx.options import OnnxOptions


def add_arguments(group) -> None:
    group.add_argument("--opset", type=int, default=20, help="ONNX opset, 18..23 (default: 20)")


def from_args(args) -> OnnxOptions:
    return OnnxOptions(opset=args.opset)
