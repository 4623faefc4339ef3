"""Core ML lowering pipeline: traced program -> ``model.mlpackage`` (ML program).

The steps, in order (each a small function below):
  0. refuse      option / plan combinations Core ML cannot run (typed error, before any work)
  1. program     the traced prefill program (prompt length 1..max_prompt; decode is S = 1), core ATen
                 (ops coremltools cannot translate rewritten as ones it can: decompositions)
  2. convert     ct.convert -> pymil program: named I/O, KV cache as fp16 states (iOS 18) or as
                 inputs/outputs (iOS 17), flexible prompt length (RangeDim), compute precision (fp16
                 keeps the RMSNorm statistics in fp32, see runs_in_fp16)
  3. passes      our MIL passes: fix_select_broadcast, fuse_sdpa (iOS 18+: attention as Core ML's fused
                 scaled_dot_product_attention), then the QuantPlan encoding (quantize.py)
  4. serialize   pymil -> Model.proto + weights/weight.bin (coremltools backend, no further passes)
  5. save        model.mlpackage
  6. normalize   deterministic bytes (normalize.py)
  7. describe    the manifest's I/O signature, read back from the saved package
"""
from __future__ import annotations

import json
import math
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from slmpack.errors import ToolchainError, UnsupportedError
from slmpack.exporter.kv_cache import CacheLayout
from slmpack.runtime.chat import TEMPLATE_FILE
from slmpack.targets.base import Artifact, IoSignature, KvCacheInfo, Report, RuntimeInfo, freeze
from slmpack.targets.coreml import names, normalize as _normalize
from slmpack.targets.coreml.llm_metadata import llm_metadata
from slmpack.targets.coreml.ops import IOS18, unsupported_features
from slmpack.targets.coreml.options import ComputePrecision, CoreMLOptions
from slmpack.targets.coreml.passes import run_pass
from slmpack.targets.coreml.passes.fix_select_broadcast import fix_select_broadcast
from slmpack.targets.coreml.passes.fuse_sdpa import fuse_sdpa

PACKAGE = "model.mlpackage"


def refuse(spec, options: CoreMLOptions, plan) -> None:
    problems = unsupported_features(spec, options, plan)
    if problems:
        raise UnsupportedError("Core ML cannot export this: " + "; ".join(str(p) for p in problems),
                               "E_TARGET_UNSUPPORTED", details={"problems": [str(p) for p in problems]})


def program(programs):
    if programs.prefill is None:
        raise ToolchainError("the Core ML target needs the traced prefill program", "E_COREML_CONVERT")
    return programs.prefill.run_decompositions(decompositions())


def decompositions() -> dict:
    """ATen ops coremltools' torch frontend has no (right) translation for, as ones it has (same values).

    ``a & b`` on tensors exports as ``aten.__and__.Tensor`` (the sliding-window mask: causal and
    within the window); it is ``bitwise_and`` by definition, which coremltools lowers to
    ``logical_and`` for bool inputs. ``aten.gelu(x, approximate="tanh")``: see ``gelu_tanh``."""
    import torch

    return {torch.ops.aten.__and__.Tensor: torch.ops.aten.bitwise_and.Tensor,
            torch.ops.aten.gelu.default: gelu_tanh}


def gelu_tanh(x, approximate: str = "none"):
    """The tanh GELU (Gemma's ``gelu_pytorch_tanh``, GPT-2 / Phi ``gelu_new``) written out.

    coremltools 9's gelu converter reads ``approximate`` only as a positional input (TorchScript);
    torch.export keeps it a keyword, so the tanh GELU became ``gelu(mode=EXACT)``: |Δ| up to 4.7e-4
    per activation, 8e-4 on Gemma 2's fp32 logits (apple/coremltools PR #2863, open). Written out,
    coremltools' own ``fuse_gelu_tanh_approximation`` pass makes it one ``gelu(TANH_APPROXIMATION)``.
    The exact GELU is left to the converter (``NotImplemented``: no decomposition)."""
    import torch

    if approximate != "tanh":
        return NotImplemented
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3))))


def cache_dtype(options: CoreMLOptions, layout: CacheLayout):
    """Core ML states are fp16 only; cache inputs/outputs follow the compute precision."""
    if layout is CacheLayout.BUFFER or options.compute_precision is ComputePrecision.FP16:
        return np.float16
    return np.float32


FP32_STATISTICS = ("pow", "reduce_mean", "rsqrt")


def runs_in_fp16(op) -> bool:
    """fp16 compute, except the RMSNorm statistics: ``x*x`` overflows fp16 once |x| > 256, which
    residual streams of real LLMs exceed. pow, reduce_mean, the epsilon add after it and rsqrt stay fp32
    (their input is cast up, the 1/rms result cast back down)."""
    if op.op_type in FP32_STATISTICS:
        return False
    if op.op_type == "add":
        return not any(getattr(v.op, "op_type", None) == "reduce_mean" for v in (op.x, op.y))
    return True


@contextmanager
def conversion_state():
    """A clean coremltools conversion state, before and after (also after a failed conversion).

    pymil keeps process-wide registries: the symbol table (``k_used_symbols``: a named symbol such as
    our ``RangeDim(symbol="seq")`` may exist once) and the op-name counter (``Builder.name_count``:
    a second conversion would name its ops differently). coremltools resets both only after a
    *successful* conversion, so one failed conversion made every later one in the process fail with
    "Symbol `seq` is used already". Its own reset is used on entry (whoever failed before us) and on
    exit (our failure must not poison the next caller)."""
    from coremltools.converters.mil.converter import _reset_conversion_state

    _reset_conversion_state()
    try:
        yield
    finally:
        _reset_conversion_state()


def convert(ep, spec, options: CoreMLOptions, layout: CacheLayout, max_prompt: int, max_context: int):
    with conversion_state():
        return _convert(ep, spec, options, layout, max_prompt, max_context)


def _convert(ep, spec, options: CoreMLOptions, layout: CacheLayout, max_prompt: int, max_context: int):
    import coremltools as ct

    seq = (ct.RangeDim(lower_bound=1, upper_bound=max_prompt, default=1, symbol=names.SEQ_DIM)
           if max_prompt > 1 else 1)
    cache_shape = (1, spec.num_kv_heads, max_context, spec.head_dim)
    cdt = cache_dtype(options, layout)
    caches = names.cache_names(spec.num_layers)
    inputs = [ct.TensorType(name=names.TOKENS, shape=(1, seq), dtype=np.int32),
              ct.TensorType(name=names.POSITIONS, shape=(seq,), dtype=np.int32)]
    outputs = [ct.TensorType(name=names.LOGITS, dtype=np.float32)]
    states = None
    if layout is CacheLayout.IO_STATIC:
        inputs += [ct.TensorType(name=n, shape=cache_shape, dtype=cdt) for n in caches]
        outputs += [ct.TensorType(name=names.cache_out_name(n), dtype=cdt) for n in caches]
    else:
        states = [ct.StateType(wrapped_type=ct.TensorType(shape=cache_shape, dtype=np.float16), name=n)
                  for n in caches]
    precision = (ct.transform.FP16ComputePrecision(op_selector=runs_in_fp16)
                 if options.compute_precision is ComputePrecision.FP16 else ct.precision.FLOAT32)
    try:
        return ct.convert(ep, source="pytorch", convert_to="milinternal", inputs=inputs, outputs=outputs,
                          states=states, compute_precision=precision,
                          minimum_deployment_target=getattr(ct.target, options.deployment_target.ct_name))
    except Exception as e:  # coremltools raises ValueError/NotImplementedError/RuntimeError...
        raise ToolchainError(f"coremltools conversion failed: {type(e).__name__}: {str(e).splitlines()[0]}",
                             "E_COREML_CONVERT") from e


def fuses_attention(options: CoreMLOptions) -> bool:
    """``scaled_dot_product_attention`` is an iOS 18 (specification 9) op."""
    return options.deployment_target.level >= IOS18


def run_passes(prog, options: CoreMLOptions, plan, param_names: dict[str, str]) -> tuple[dict, dict | None]:
    counts = {"fix_select_broadcast": run_pass(prog, fix_select_broadcast)}
    if fuses_attention(options):
        counts["fuse_sdpa"] = run_pass(prog, fuse_sdpa)
    encoded = None
    if plan is not None:
        from slmpack.targets.coreml.quantize import apply_plan

        encoded = run_pass(prog, apply_plan, plan, param_names, options)
        counts["apply_quant_plan"] = len(encoded)
    return counts, encoded


def serialize(prog, options: CoreMLOptions):
    import coremltools as ct

    try:
        return ct.convert(prog, convert_to="mlprogram", pass_pipeline=ct.PassPipeline.EMPTY,
                          compute_precision=ct.precision.FLOAT32, skip_model_load=True,
                          compute_units=getattr(ct.ComputeUnit, options.compute_units.ct_name),
                          minimum_deployment_target=getattr(ct.target, options.deployment_target.ct_name))
    except Exception as e:
        raise ToolchainError(f"coremltools serialization failed: {type(e).__name__}: {str(e).splitlines()[0]}",
                             "E_COREML_CONVERT") from e


def param_names(ep) -> dict[str, str]:
    """pymil const name prefix -> checkpoint tensor name (wrappers hold the reference as ``ref``)."""
    out = {}
    for placeholder, fqn in sorted(ep.graph_signature.inputs_to_parameters.items()):
        out[placeholder] = fqn[len("ref."):] if fqn.startswith("ref.") else fqn
    return out


def lower(programs, spec, options: CoreMLOptions, out_dir: Path, gen: dict, plan=None) -> Artifact:
    refuse(spec, options, plan)
    layout = programs.layout
    cfg = programs.config
    ep = program(programs)
    prog = convert(ep, spec, options, layout, cfg.max_prompt, cfg.max_context)
    counts, encoded = run_passes(prog, options, plan, param_names(ep))
    model = serialize(prog, options)
    path = Path(out_dir) / PACKAGE
    model.save(str(path))
    tmpl = Path(out_dir) / TEMPLATE_FILE
    metadata = {**_metadata(spec, options, layout),
                **llm_metadata(gen, cfg.max_prompt, cfg.max_context,
                               tmpl.read_text(encoding="utf-8") if tmpl.is_file() else None)}
    if encoded is not None:
        from slmpack.targets.coreml.quantize import META_KEY

        metadata[META_KEY] = json.dumps(encoded, sort_keys=True)
    files = _normalize.normalize(path, metadata)
    from slmpack.targets.coreml.describe import describe

    io, kv_cache, op_types = describe(path, spec, options, layout, cfg)
    return Artifact(
        primary=PACKAGE, files=tuple(f"{PACKAGE}/{f}" for f in files), io=IoSignature.from_json(io),
        kv_cache=KvCacheInfo.from_json(kv_cache),
        runtime=RuntimeInfo("coreml", options.deployment_target.runtime_label, freeze({
                 "deployment_target": options.deployment_target.value,
                 "compute_units": options.compute_units.value,
                 "compute_precision": options.compute_precision.value,
                 "specification_version": options.deployment_target.level})),
        report=Report.from_json({"passes": counts, "op_types": op_types, "options": options.to_json(),
                "precision": options.compute_precision.value,
                **attention_report(counts, spec, options),
                "fp32_ops_in_fp16_program": ([*FP32_STATISTICS, "add (after reduce_mean)"]
                                             if options.compute_precision is ComputePrecision.FP16 else []),
                **({"quantization": {"encoding": next(iter(encoded.values()))["encoding"] if encoded else None,
                                     "tensors": encoded}} if encoded is not None else {})}),
    )


def attention_report(counts: dict, spec, options: CoreMLOptions) -> dict:
    """``attention_blocks_fused``: layers whose attention runs as one ``scaled_dot_product_attention``."""
    out = {"attention_blocks_fused": f"{counts.get('fuse_sdpa', 0)}/{spec.num_layers}"}
    if not fuses_attention(options):
        out["attention_not_fused"] = (f"scaled_dot_product_attention is an iOS 18 / macOS 15 op; deployment "
                                      f"target is {options.deployment_target.value}")
    return out


def _metadata(spec, options: CoreMLOptions, layout: CacheLayout) -> dict[str, str]:
    return {"slmpack.kv_cache": "state" if layout is CacheLayout.BUFFER else "io",
            "slmpack.compute_precision": options.compute_precision.value,
            "slmpack.architecture": spec.architecture}
