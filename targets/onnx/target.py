"""The ONNX Runtime target."""
from __future__ import annotations

from pathlib import Path

import onnx

from slmpack.exporter.kv_cache import CacheLayout, CacheUpdate
from slmpack.targets.base import (Artifact, Capabilities, Consumes, DynamicActivation, ExecutedQuant, OwnVectorsOnly,
                                  Readback, TargetName, Tolerance, Unsupported)
from slmpack.targets.onnx import lora_inputs
from slmpack.targets.onnx import lower as _lower
from slmpack.targets.onnx.names import input_names, output_names
from slmpack.targets.onnx.ops import unsupported_features
from slmpack.targets.onnx.options import OnnxOptions


FP32_TOLERANCE = Tolerance(atol=1e-4, rtol=1e-4)
# quantized packages: test vectors hold the plan's fake-quant logits; the artifact computes the
# same integers with other kernels (blockwise fp32 dequant, int8 GEMMs), so allow more rounding
QUANT_TOLERANCE = Tolerance(atol=2e-3, rtol=2e-3, min_top1=0.99, greedy_exact=False)
QUANT_ACT_TOLERANCE = Tolerance(atol=5e-2, rtol=1e-2, min_top1=0.98, greedy_exact=False)


def quantizes_activations(plan) -> bool:
    return bool(set(plan.summary().get("by_activation", {})) - {"none"})


class OnnxTarget(OwnVectorsOnly):
    name = TargetName.ONNX
    options_type = OnnxOptions
    consumes = Consumes.EXPORTED_PROGRAM
    cache_update = CacheUpdate.INDEX_COPY

    def layout(self, options: OnnxOptions) -> CacheLayout:
        return CacheLayout.IO_CONCAT

    def capabilities(self, options: OnnxOptions) -> Capabilities:
        """What a QuantPlan may ask of this target (checked before any calibration)."""
        from slmpack.targets.onnx.quantize import capabilities

        # LoRA adapters as .onnx_adapter files (onnxruntime / onnxruntime-genai Adapters)
        return Capabilities(precisions=("fp32",), quant=capabilities(options), separate_adapters=True)

    def preflight(self, spec, options: OnnxOptions, plan=None) -> list[Unsupported]:
        return unsupported_features(spec, options, plan)

    def readback(self, pkg_dir: Path, plan) -> Readback:
        """Decode the artifact's stored integers/scales and compare them with ``plan``."""
        from slmpack.targets.onnx.readback import readback

        return Readback.from_json(readback(Path(pkg_dir), plan))

    def tolerance(self, options: OnnxOptions, plan=None) -> Tolerance:
        if plan is None:
            return FP32_TOLERANCE
        return QUANT_ACT_TOLERANCE if quantizes_activations(plan) else QUANT_TOLERANCE

    def executed_quant(self, options: OnnxOptions, plan) -> ExecutedQuant:
        from slmpack.targets.onnx.quantize import dynamic_activation_blocks

        # MatMulNBits accuracy_level 4: A quantized symmetrically per (token, weight block)
        return ExecutedQuant({n: DynamicActivation(block=b) for n, b in dynamic_activation_blocks(plan).items()})

    def extra_vectors(self, pkg_dir: Path, manifest: dict, runner, tol: Tolerance) -> dict | None:
        """Separate LoRA adapters: each adapter active (onnxruntime RunOptions) reproduces the
        reference with the adapter's branch (``test_vectors_adapter.safetensors``)."""
        adapters = (manifest.get("runtime") or {}).get("adapters") or []
        if not adapters:
            return None
        from safetensors.numpy import load_file

        from slmpack.exporter.lora import VECTORS_FILE
        from slmpack.runtime.adapters.onnx import OnnxAdapter
        from slmpack.runtime.ladder import check_vectors
        from slmpack.runtime.manifest import Manifest

        files = manifest.get("files") or {}
        out: dict = {"adapters": {}}
        for a in adapters:
            if a["file"] not in files or VECTORS_FILE not in files:
                out["adapters"][a["name"]] = {"passed": False, "problem": f"{a['file']} or {VECTORS_FILE} "
                                              "is not a package file"}
                continue
            with_adapter = OnnxAdapter(Path(pkg_dir), Manifest.from_json(manifest), lora=a["file"])
            out["adapters"][a["name"]] = check_vectors(with_adapter, load_file(str(Path(pkg_dir) / VECTORS_FILE)), tol)
        out["passed"] = all(r["passed"] for r in out["adapters"].values())
        return out

    def lower(self, programs, spec, options: OnnxOptions, out_dir: Path, gen: dict, plan=None) -> Artifact:
        return _lower.lower(programs, spec, options, out_dir, gen, plan)

    def check(self, pkg_dir: Path, manifest: dict) -> list[str]:
        """Structural check: the checker passes and the I/O names match the manifest's model."""
        problems = []
        path = pkg_dir / manifest["artifact"]
        try:
            onnx.checker.check_model(str(path), full_check=True)
            model = onnx.load(str(path), load_external_data=False)
        except Exception as e:  # checker/protobuf errors
            return [f"{path.name}: {str(e).splitlines()[0]}"]
        layers = manifest["model"]["num_layers"]
        got_in = [i.name for i in model.graph.input]
        got_out = [o.name for o in model.graph.output]
        lora = [n for n in got_in if n.endswith(lora_inputs.SUFFIXES)]   # separate adapters' inputs
        if lora and not (manifest.get("runtime") or {}).get("adapters"):
            problems.append(f"LoRA inputs {lora[:2]}... but the manifest declares no adapter")
        got_in = [n for n in got_in if n not in lora]
        if got_in != input_names(layers):
            problems.append(f"inputs {got_in[:4]}... differ from the GenAI names")
        if got_out != output_names(layers):
            problems.append(f"outputs {got_out[:3]}... differ from the GenAI names")
        return problems

    def runner(self, pkg_dir: Path, manifest: dict, threads: int = 0):
        """The runtime kit's adapter: host validation and the device runner run one code path."""
        from slmpack.runtime.adapters.onnx import OnnxAdapter
        from slmpack.runtime.manifest import Manifest

        return OnnxAdapter(Path(pkg_dir), Manifest.from_json(manifest), threads)
