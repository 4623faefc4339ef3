"""CLI flags of the LiteRT (TFLite) target."""
from __future__ import annotations

import argparse

from slmpack.targets.tflite.options import TFLiteOptions, TFLitePrecision


def _lengths(text: str) -> tuple[int, ...]:
    try:
        out = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not out:
        raise argparse.ArgumentTypeError("expected at least one prefill length")
    return out


def add_arguments(group) -> None:
    group.add_argument("--tflite-prefill-lengths", type=_lengths, default=(8, 32, 128), metavar="N[,N...]",
                       help="one prefill_<N> signature per length, capped by --max-prompt (default: 8,32,128)")
    group.add_argument("--tflite-precision", default="fp32", choices=[p.value for p in TFLitePrecision],
                       help="weight encoding of model.tflite (default: fp32)")
    group.add_argument("--tflite-no-composites", action="store_true",
                       help="lower RMSNorm / attention as plain ops instead of LiteRT composites")
    group.add_argument("--tflite-no-litertlm", action="store_true", help="do not write model.litertlm")


def from_args(args) -> TFLiteOptions:
    return TFLiteOptions(prefill_lengths=args.tflite_prefill_lengths, precision=args.tflite_precision,
                         composites=not args.tflite_no_composites, litertlm=not args.tflite_no_litertlm)
