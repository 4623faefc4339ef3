"""CLI flags of the ONNX target."""
from __future__ import annotations

from slmpack.targets.onnx.options import OnnxOptions


def add_arguments(group) -> None:
    group.add_argument("--opset", type=int, default=20, help="ONNX opset, 18..23 (default: 20)")
    group.add_argument("--onnx-external-data", default="64MiB", metavar="SIZE",
                       help="models larger than SIZE keep their weights in model.onnx.data, read by ORT without "
                       "parsing one big protobuf (lower peak RSS); 0 = always (default: 64MiB)")


def from_args(args) -> OnnxOptions:
    from slmpack.quantize_config import parse_size

    return OnnxOptions(opset=args.opset, external_data_threshold_bytes=parse_size(args.onnx_external_data, "onnx_external_data"))
