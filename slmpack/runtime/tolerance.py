"""Each target's declared logit tolerance, as rules over a package's declarative manifest fields.

The device never takes a tolerance from the manifest: a manifest can be edited and re-hashed
(issue 17, defect 4: ``atol: 1e9`` gave a PASS). ``for_manifest`` derives the bound from what
the package *is* (target, precision, quantization plan and its activation scheme, Core ML compute
precision and cache kind), by the same rules the targets declare at export time, and
``checked`` refuses a manifest whose ``tolerance`` field disagrees with them. The loosest bound
an edited manifest can select is therefore the loosest rule in this table, never a number it
writes itself; a signed package (``slmpack sign``) also covers the declarative fields.
"""
from __future__ import annotations

from .manifest import KvCacheInfo, Manifest
from .records import TargetName, Tolerance, invalid

FP32 = Tolerance(atol=1e-4, rtol=1e-4)
_LOSSY = dict(min_top1=0.0, greedy_exact=False)

ONNX_PLAN = Tolerance(atol=2e-3, rtol=2e-3, min_top1=0.99, greedy_exact=False)
ONNX_PLAN_ACT = Tolerance(atol=5e-2, rtol=1e-2, min_top1=0.98, greedy_exact=False)

EXECUTORCH = {"fp32": FP32, "fp16": Tolerance(atol=5e-2, rtol=2e-2, **_LOSSY)}
EXECUTORCH_PLAN = Tolerance(atol=1e-1, rtol=2e-2, min_top1=0.95, greedy_exact=False)
EXECUTORCH_EXACT_ENCODINGS = frozenset({"int8_weight_only", "embedding_int8"})  # fp32 math on the plan's values

TFLITE = {"fp32": FP32, "fp16": Tolerance(atol=5e-2, rtol=2e-2, **_LOSSY),
          "int8_weight_only": Tolerance(atol=1.0, rtol=0.35, **_LOSSY),
          "dynamic_int8": Tolerance(atol=1.0, rtol=0.35, **_LOSSY)}
TFLITE_OTHER = Tolerance(atol=1.0, rtol=0.5, **_LOSSY)
TFLITE_PLAN = Tolerance(atol=1e-3, rtol=1e-3, min_top1=0.99, greedy_exact=False)
TFLITE_PLAN_ACT = Tolerance(atol=5e-2, rtol=1e-2, min_top1=0.98, greedy_exact=False)

COREML_FP32 = FP32
COREML_FP32_FP16_CACHE = Tolerance(atol=2e-2, rtol=2e-3)
COREML_FP16 = Tolerance(atol=0.2, rtol=0.02, min_top1=0.99, greedy_exact=False)
COREML_FP32_PLAN = Tolerance(atol=2e-2, rtol=2e-3, min_top1=0.99, greedy_exact=False)


def _plan_has_activations(m: Manifest) -> bool:
    acts = (m.quantization.details.get("summary") or {}).get("by_activation") or {}
    return bool(set(acts) - {"none"})


def for_manifest(m: Manifest) -> Tolerance:
    """The tolerance the package's target declares for a package like this one."""
    plan = m.quantization.plan is not None
    if m.target is TargetName.ONNX:
        return (ONNX_PLAN_ACT if _plan_has_activations(m) else ONNX_PLAN) if plan else FP32
    if m.target is TargetName.EXECUTORCH:
        if plan:
            enc = (m.report.details.get("quantization") or {}).get("encodings") or {}
            return FP32 if enc and set(enc.values()) <= EXECUTORCH_EXACT_ENCODINGS else EXECUTORCH_PLAN
        return EXECUTORCH.get(m.precision, FP32)
    if m.target is TargetName.TFLITE:
        if plan:
            return TFLITE_PLAN_ACT if _plan_has_activations(m) else TFLITE_PLAN
        return TFLITE.get(m.report.precision or "fp32", TFLITE_OTHER)
    if m.runtime.details.get("compute_precision") == "fp16":
        return COREML_FP16
    if plan:
        return COREML_FP32_PLAN
    return COREML_FP32_FP16_CACHE if coreml_stateful(m.kv_cache) else COREML_FP32


def coreml_stateful(kv: KvCacheInfo) -> bool:
    """A Core ML cache held in model state (fp16) rather than passed in and out."""
    return kv.details.get("kind") == "state" or kv.layout in ("state", "buffer")


# encoder packages (embeddings / hidden states / logits vs the reference). fp32; quantized (a plan,
# vs its fake-quant reference): weight-only plans compute the plan's values in fp32, dynamic int8
# activations differ from the reference's rounding by an activation step here and there: ONNX
# MatMulNBits accuracy_level 4 (measured max |Δ| 2.5e-3 on all-MiniLM-L6-v2 8da8w, 2026-12-02) and
# XNNPACK qd8 (1.2e-2, 8da4w). LiteRT runs no quantized encoders (exporter/encoder/quant.py).
ENCODER_FP32 = {TargetName.ONNX: FP32, TargetName.EXECUTORCH: FP32, TargetName.TFLITE: FP32,
                TargetName.COREML: COREML_FP32}
ENCODER_PLAN = {TargetName.ONNX: FP32, TargetName.EXECUTORCH: FP32, TargetName.COREML: COREML_FP32}
ENCODER_PLAN_ACT = {TargetName.ONNX: Tolerance(atol=2e-3, rtol=2e-2),
                    TargetName.EXECUTORCH: Tolerance(atol=2e-2, rtol=2e-2)}


def for_encoder(m) -> Tolerance:
    """The tolerance the target declares for an encoder package (``EncoderManifest``), from what it
    is: fp32, or a quantized plan with or without dynamic int8 activations."""
    q = m.details.get("quantization") or {}
    precision = m.details.get("precision", "fp32")
    if not q.get("recipe"):
        if precision != "fp32" or q.get("plan") is not None:
            raise invalid("precision", f"{precision!r} without a quantization recipe")
        return ENCODER_FP32[m.target]
    table = ENCODER_PLAN_ACT if q.get("dynamic_activations") else ENCODER_PLAN
    if m.target not in table:
        raise invalid("quantization", f"target {m.target.value} declares no quantized encoder of this kind")
    return table[m.target]


def _same(m, tol: Tolerance) -> Tolerance:
    if (m.tolerance.atol, m.tolerance.rtol) != (tol.atol, tol.rtol):
        raise invalid("tolerance", f"atol={m.tolerance.atol:g} rtol={m.tolerance.rtol:g} is not what target "
                      f"{m.target.value} declares for this package (atol={tol.atol:g} rtol={tol.rtol:g})")
    return tol


def checked_encoder(m) -> Tolerance:
    """``for_encoder(m)``, refusing an encoder manifest whose stated tolerance is not the declared one."""
    return _same(m, for_encoder(m))


def checked(m: Manifest) -> Tolerance:
    """``for_manifest(m)``, refusing a manifest whose stated tolerance is not the declared one."""
    return _same(m, for_manifest(m))


__all__ = ["for_manifest", "checked", "coreml_stateful", "for_encoder", "checked_encoder", "ENCODER_FP32",
           "ENCODER_PLAN", "ENCODER_PLAN_ACT"]
