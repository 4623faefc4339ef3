"""CLI flags of the ExecuTorch target."""
from __future__ import annotations

from slmpack.targets.executorch.options import EtPrecision, ExecuTorchOptions, Sdpa


def add_arguments(group) -> None:
    group.add_argument("--et-precision", choices=[p.value for p in EtPrecision], default=EtPrecision.FP32.value,
                       help="float type inside model.pte (default: fp32; bf16 is refused, XNNPACK cannot run it)")
    group.add_argument("--et-sdpa", choices=[s.value for s in Sdpa], default=Sdpa.CUSTOM.value,
                       help="attention: ExecuTorch's custom SDPA + update_cache ops (default; 6-16x faster "
                       "decode) or the decomposed matmul/softmax graph (all FLOPs on XNNPACK)")
    group.add_argument("--et-bundle", action="store_true",
                       help="also write model.bpte, a BundledProgram with reference test cases for on-device checks")


def from_args(args) -> ExecuTorchOptions:
    return ExecuTorchOptions(precision=args.et_precision, sdpa=args.et_sdpa, bundled_program=args.et_bundle)
