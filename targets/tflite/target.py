"""The LiteRT (TFLite) target: one model.tflite with `prefill_<n>` and `decode` signatures over an
external KV cache, plus a model.litertlm bundle for LiteRT-LM."""
from __future__ import annotations

from pathlib import Path

from slmpack.errors import SlmpackError
from slmpack.exporter.kv_cache import CacheLayout, CacheUpdate
from slmpack.targets.base import (Artifact, Capabilities, Consumes, ExecutedQuant, Readback, ReferenceRequest,
                                  ReferenceTrace, TargetName, Tolerance, Unsupported)
from slmpack.targets.tflite import lower as _lower
from slmpack.targets.tflite import litertlm, names, ops, quantize, vectors
from slmpack.targets.tflite.options import TFLiteOptions, TFLitePrecision
from slmpack.targets.tflite.runner import TFLiteRunner, load_interpreter
from slmpack.runtime.tflite_verify import ArtifactInvalid, verify_bytes

# Logit tolerance per weight precision. fp32 is exact up to float reassociation (~1e-6 seen);
# the others are judged by the ladder's LLM metrics (top-1, KL, perplexity, reported), the
# logit bound only catches broken graphs (rtol is relative to the largest reference logit).
_LOSSY = dict(min_top1=0.0, greedy_exact=False)
TOLERANCES = {
    TFLitePrecision.FP32: Tolerance(atol=1e-4, rtol=1e-4),
    TFLitePrecision.FP16: Tolerance(atol=5e-2, rtol=2e-2, **_LOSSY),
    TFLitePrecision.WEIGHT_ONLY_INT8: Tolerance(atol=1.0, rtol=0.35, **_LOSSY),
    TFLitePrecision.DYNAMIC_INT8: Tolerance(atol=1.0, rtol=0.35, **_LOSSY),
}
_QUANTIZED = Tolerance(atol=1.0, rtol=0.5, **_LOSSY)   # int4 and anything unknown
# A QuantPlan is encoded bit-exactly (INT8 + DEQUANTIZE = the fake-quant reference's q * scale);
# only kernel summation order differs (XNNPACK may run FULLY_CONNECTED on the int8 weights).
PLAN_TOLERANCE = Tolerance(atol=1e-3, rtol=1e-3, min_top1=0.99, greedy_exact=False)
# Plans with dynamic int8 activations: the runtime quantizes each row as the fake-quant reference
# does, but float summation order can move a value across a rounding boundary (one int8 step), and
# blockwise int4 scales are stored bfloat16-rounded (quant_encode.py); same bound as ONNX's.
PLAN_ACT_TOLERANCE = Tolerance(atol=5e-2, rtol=1e-2, min_top1=0.98, greedy_exact=False)


class TFLiteTarget:
    name = TargetName.TFLITE
    options_type = TFLiteOptions
    consumes = Consumes.MODULE        # litert-torch traces the wrapper module itself
    cache_update = CacheUpdate.INDEX_COPY

    def layout(self, options: TFLiteOptions) -> CacheLayout:
        return CacheLayout.IO_STATIC

    def tolerance(self, options: TFLiteOptions, plan=None) -> Tolerance:
        if plan is not None:
            from slmpack.targets.onnx.target import quantizes_activations

            return PLAN_ACT_TOLERANCE if quantizes_activations(plan) else PLAN_TOLERANCE
        return TOLERANCES.get(options.precision, _QUANTIZED)

    def capabilities(self, options: TFLiteOptions) -> Capabilities:
        """What a QuantPlan may ask of this target (checked before any calibration)."""
        return Capabilities(precisions=tuple(p.value for p in TFLitePrecision), quant=quantize.capabilities(options))

    def preflight(self, spec, options: TFLiteOptions, plan=None) -> list[Unsupported]:
        return ops.unsupported_features(spec, options, plan)

    def readback(self, pkg_dir: Path, plan) -> Readback:
        """Decode the stored INT8 weights/scales of model.tflite and compare them with ``plan``."""
        return Readback.from_json(quantize.readback(Path(pkg_dir) / names.MODEL_FILE, plan))

    def lower(self, programs, spec, options: TFLiteOptions, out_dir: Path, gen: dict, plan=None) -> Artifact:
        return _lower.lower(programs, spec, options, out_dir, gen, plan)

    def check(self, pkg_dir: Path, manifest: dict) -> list[str]:
        """Structural check: verifier, op inventory (no Flex), signatures as the manifest says,
        LiteRT's own verifier, and the LiteRT-LM bundle's presence."""
        path = Path(pkg_dir) / manifest["artifact"]
        try:
            data = path.read_bytes()
            summary = verify_bytes(data)
        except (OSError, ArtifactInvalid) as e:
            return [f"{path.name}: {e}"]
        problems = ops.forbidden_ops(summary)
        m = manifest["model"]
        spec = _SpecView(m)
        lengths = tuple(manifest["io"].get("prefill_lengths", ()))
        problems += _lower.check_signatures(summary, spec, lengths, m["max_context"])
        try:
            load_interpreter(data)
        except SlmpackError as e:
            problems.append(f"{path.name}: {e}")
        bundle = manifest.get("runtime", {}).get("litert_lm")
        if bundle:
            b = Path(pkg_dir) / bundle["file"]
            if not b.is_file() or b.read_bytes()[:8] != b"LITERTLM":
                problems.append(f"{bundle['file']}: missing or not a LiteRT-LM file")
        return problems

    def runner(self, pkg_dir: Path, manifest: dict, threads: int = 0) -> TFLiteRunner:
        return TFLiteRunner(Path(pkg_dir) / manifest["artifact"], threads=threads)

    def reference_requests(self, spec, options: TFLiteOptions, trace_cfg) -> tuple[ReferenceRequest, ...]:
        return vectors.requests(options.signature_lengths(trace_cfg.max_prompt), spec.vocab_size)

    def write_reference(self, pkg_dir: Path, options, traces: tuple[ReferenceTrace, ...]) -> tuple[str, ...]:
        return (vectors.write(Path(pkg_dir), traces),)

    def executed_quant(self, options, plan) -> ExecutedQuant:
        return ExecutedQuant()   # the plan's numbers (plans with dynamic activations are refused)

    def extra_vectors(self, pkg_dir: Path, manifest: dict, runner, tol: Tolerance) -> dict:
        """The per-signature vectors (vectors.py) through every prefill signature."""
        return vectors.check(runner, Path(pkg_dir) / vectors.FILE, tol)


class _SpecView:
    """The ModelSpec facts signature checks need, read back from a manifest."""

    def __init__(self, m: dict):
        self.num_layers, self.num_kv_heads = m["num_layers"], m["num_kv_heads"]
        self.head_dim, self.vocab_size = m["head_dim"], m["vocab_size"]


__all__ = ["TFLiteTarget", "names", "litertlm"]
