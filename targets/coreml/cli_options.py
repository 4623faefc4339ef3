"""CLI flags of the Core ML target."""
from __future__ import annotations

from slmpack.targets.coreml.options import ComputePrecision, ComputeUnits, CoreMLOptions, DeploymentTarget, KVCache


def add_arguments(group) -> None:
    group.add_argument("--coreml-deployment-target", default=DeploymentTarget.IOS18.value,
                       choices=[t.value for t in DeploymentTarget],
                       help="minimum OS the .mlpackage targets (default: ios18; states need ios18/macos15)")
    group.add_argument("--coreml-compute-precision", default=ComputePrecision.FP16.value,
                       choices=[p.value for p in ComputePrecision], help="compute precision (default: fp16)")
    group.add_argument("--coreml-compute-units", default=ComputeUnits.ALL.value,
                       choices=[u.value for u in ComputeUnits],
                       help="compute units recorded in the manifest and used by the macOS runner (default: all)")
    group.add_argument("--coreml-kv-cache", default=KVCache.AUTO.value, choices=[k.value for k in KVCache],
                       help="KV cache as Core ML state or as inputs/outputs (default: auto = state from ios18)")
    group.add_argument("--coreml-palettize", action="store_true",
                       help="encode quantized weights as per-block lookup tables (ios18+)")


def from_args(args) -> CoreMLOptions:
    return CoreMLOptions(deployment_target=args.coreml_deployment_target,
                         compute_precision=args.coreml_compute_precision,
                         compute_units=args.coreml_compute_units, kv_cache=args.coreml_kv_cache,
                         palettize=args.coreml_palettize)
