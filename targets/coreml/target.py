"""The Core ML target (.mlpackage ML program; KV cache as iOS 18 state or as inputs/outputs)."""
from __future__ import annotations

from pathlib import Path

from slmpack.exporter.kv_cache import CacheLayout, CacheUpdate
from slmpack.targets.base import (Artifact, Capabilities, Consumes, ExecutedQuant, OwnVectorsOnly, Readback,
                                  TargetName, Tolerance, Unsupported)
from slmpack.targets.coreml.ops import unsupported_features
from slmpack.targets.coreml.options import ComputePrecision, CoreMLOptions

# lower / check / runner import coremltools (~270 MB, seconds): imported when used, so exporting to
# another target never pays for it.

# the declared bounds live in the runtime kit's table (slmpack/runtime/tolerance.py), which the
# device also derives them from: fp32 compute with an fp32 (in/out) cache matches eager to ~1e-6; with
# fp16 Core ML states the reference rounds its cache the same way and the bound allows fp16 rounding
# flips; fp16 compute is judged by held-out top-1; a QuantPlan package by its fake-quant reference
from slmpack.runtime.tolerance import (COREML_FP16 as FP16_TOLERANCE, COREML_FP32 as FP32_TOLERANCE,  # noqa: E402
                                       COREML_FP32_FP16_CACHE as FP32_FP16_CACHE_TOLERANCE,
                                       COREML_FP32_PLAN as FP32_QUANT_TOLERANCE)


class CoreMLTarget(OwnVectorsOnly):
    name = TargetName.COREML
    options_type = CoreMLOptions
    consumes = Consumes.EXPORTED_PROGRAM
    cache_update = CacheUpdate.SLICE        # coremltools 9 cannot convert index_copy

    def layout(self, options: CoreMLOptions) -> CacheLayout:
        return CacheLayout.BUFFER if options.uses_state else CacheLayout.IO_STATIC

    def tolerance(self, options: CoreMLOptions, plan=None) -> Tolerance:
        """By compute precision, cache kind (states are fp16) and quantization."""
        if options.compute_precision is ComputePrecision.FP16:
            return FP16_TOLERANCE
        if plan is not None:
            return FP32_QUANT_TOLERANCE
        return FP32_FP16_CACHE_TOLERANCE if options.uses_state else FP32_TOLERANCE

    def capabilities(self, options: CoreMLOptions) -> Capabilities:
        from slmpack.targets.coreml.quantize import capabilities

        return Capabilities(precisions=tuple(p.value for p in ComputePrecision), quant=capabilities(options))

    def readback(self, pkg_dir: Path, plan) -> Readback:
        """Decode the package's constexpr weight encodings and compare them with ``plan``."""
        from slmpack.targets.coreml.readback import readback

        return Readback.from_json(readback(Path(pkg_dir), plan))

    def preflight(self, spec, options: CoreMLOptions, plan=None) -> list[Unsupported]:
        return unsupported_features(spec, options, plan)

    def executed_quant(self, options, plan) -> ExecutedQuant:
        return ExecutedQuant()   # the plan's numbers (dynamic activations are refused)

    def extra_vectors(self, pkg_dir: Path, manifest: dict, runner, tol: Tolerance) -> None:
        return None

    def lower(self, programs, spec, options: CoreMLOptions, out_dir: Path, gen: dict, plan=None) -> Artifact:
        from slmpack.targets.coreml import lower as _lower

        return _lower.lower(programs, spec, options, out_dir, gen, plan)

    def check(self, pkg_dir: Path, manifest: dict) -> list[str]:
        from slmpack.targets.coreml.check import check_package

        return check_package(pkg_dir, manifest)

    def runner(self, pkg_dir: Path, manifest: dict):
        from slmpack.runtime.adapters.coreml import open_coreml   # the runtime kit's adapter: one code path
        from slmpack.runtime.manifest import Manifest

        return open_coreml(pkg_dir, Manifest.from_json(manifest))
