"""LiteRT lowering pipeline: reference module -> model.tflite (+ model.litertlm).

The steps, in order (each a small function below):
  1. wrap       LiteRTDecoder over the traced reference module (litert-torch I/O names, DUS cache
                writes, odml.rms_norm / odml.scaled_dot_product_attention composites)
  2. convert    litert-torch: one signature per prefill length (`prefill_<n>`) plus `decode`,
                int32 tokens/positions, weight precision recipe (quantize.py)
  2b. encode    with a QuantPlan: the plan's integers as INT8 + DEQUANTIZE (quantize.encode_plan)
  3. verify     our structural verifier over the flatbuffer (verify.py), before any native code
  4. ops        op inventory, composites found, Flex / unknown custom ops are an error (ops.py)
  5. load       LiteRT's own verifier + interpreter build (runner.load_interpreter); signature check
  6. save       model.tflite
  7. bundle     model.litertlm for LiteRT-LM (litertlm.py), when the package has a tokenizer.json

The pipeline then writes test_vectors_tflite.safetensors: the reference through every prefill
signature, on the inputs ``TFLiteTarget.reference_requests`` declares (vectors.py).
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch

from slmpack.errors import SlmpackError, ToolchainError
from slmpack.targets.base import Artifact, IoSignature, KvCacheInfo, Report, RuntimeInfo, freeze
from slmpack.targets.tflite import names, ops, quantize
from slmpack.targets.tflite.litertlm import build_bundle
from slmpack.targets.tflite.module import LiteRTDecoder, sample_inputs
from slmpack.targets.tflite.options import TFLiteOptions
from slmpack.targets.tflite.runner import load_interpreter
from slmpack.targets.tflite.share_quant import share_quantization_vectors
from slmpack.runtime.tflite_verify import ModelSummary, verify_bytes

MODEL_FILE = names.MODEL_FILE


@contextlib.contextmanager
def _quiet_litert_torch():
    """litert-torch prints a progress tree unless LITERT_TORCH_SHOW_PROGRESS is off."""
    key = "LITERT_TORCH_SHOW_PROGRESS"
    old = os.environ.get(key)
    os.environ[key] = "n"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def wrap(programs, options: TFLiteOptions) -> LiteRTDecoder:
    return LiteRTDecoder(programs.module.ref, composites=options.composites).eval()


def convert(module: LiteRTDecoder, lengths: tuple[int, ...], options: TFLiteOptions) -> bytes:
    import litert_torch

    converter = litert_torch.Converter()
    for n in lengths:
        converter.signature(names.prefill(n), module, sample_kwargs=sample_inputs(module.ref, n))
    converter.signature(names.DECODE, module, sample_kwargs=sample_inputs(module.ref, 1))
    try:
        with _quiet_litert_torch(), torch.no_grad():
            model = converter.convert(quant_config=quantize.recipe_for(options.precision), strict_export=False)
            return bytes(model.model_content())
    except SlmpackError:
        raise
    except Exception as e:  # litert-torch / MLIR raise many types; one line, keep the cause
        raise ToolchainError(f"litert-torch conversion failed: {type(e).__name__}: {str(e).splitlines()[0]}",
                             "E_TFLITE_CONVERT") from e


def check_signatures(summary: ModelSummary, spec, lengths: tuple[int, ...], max_context: int) -> list[str]:
    """Problems with the signature set, names, shapes and dtypes (empty when as designed)."""
    problems = []
    want = {names.prefill(n): n for n in lengths} | {names.DECODE: 1}
    if set(summary.signatures) != set(want):
        problems.append(f"signatures {sorted(summary.signatures)} differ from {sorted(want)}")
    for key, seq in want.items():
        sig = summary.signatures.get(key)
        if sig is None:
            continue
        expect_in = names.input_specs(spec, seq, max_context)
        expect_out = names.output_specs(spec, seq, max_context)
        for kind, got, exp in (("input", sig.inputs, expect_in), ("output", sig.outputs, expect_out)):
            if set(got) != set(exp):
                problems.append(f"{key}: {kind}s {sorted(got)} differ from {sorted(exp)}")
                continue
            for name, (shape, dtype) in exp.items():
                if got[name]["shape"] != shape or got[name]["dtype"] != names.TFLITE_DTYPES[dtype]:
                    problems.append(f"{key}: {kind} {name} is {got[name]} (expected {shape} {dtype})")
    return problems


def lower(programs, spec, options: TFLiteOptions, out_dir: Path, gen: dict, plan=None) -> Artifact:
    cfg = programs.config
    lengths = options.signature_lengths(cfg.max_prompt)
    module = wrap(programs, options)
    data = convert(module, lengths, options)
    encoding = None
    if plan is not None and plan.quantized_names():   # traced from the plan's fake-quant reference
        data, encoding = quantize.encode_plan(data, plan)
    data, shared = share_quantization_vectors(data)   # one copy of each scale / zero-point vector
    summary = verify_bytes(data)
    inventory = ops.inventory(summary)
    ops.require_builtin_only(summary, options.allow_flex)
    problems = check_signatures(summary, spec, lengths, cfg.max_context)
    if problems:
        raise ToolchainError("the converted model has unexpected signatures: " + "; ".join(problems),
                             "E_TFLITE_SIGNATURES", details={"problems": problems})
    load_interpreter(data)   # LiteRT's verifier and op resolution, on bytes we verified first
    (out_dir / MODEL_FILE).write_bytes(data)
    files = [MODEL_FILE]
    bundle = None
    if options.litertlm and (out_dir / "tokenizer.json").is_file():
        bundle = build_bundle(out_dir, MODEL_FILE, out_dir / "tokenizer.json", spec, gen, cfg.max_context)
        files.append(bundle["file"])
    return Artifact(
        primary=MODEL_FILE, files=tuple(files),
        io=IoSignature.from_json({"signatures": {k: {"inputs": names.describe(sig.inputs), "outputs": names.describe(sig.outputs)}
                           for k, sig in sorted(summary.signatures.items())},
            "prefill_lengths": list(lengths), "token_dtype": "int32",
            "input_order": names.input_names(spec.num_layers),
            "output_order": names.output_names(spec.num_layers)}),
        kv_cache=KvCacheInfo("io_static", "float32", ("batch", "num_kv_heads", "max_context", "head_dim"),
                             cfg.max_context, freeze({
                                 "names": names.cache_names(spec.num_layers),
                                 "update": "dynamic_update_slice at input_pos[0]",
                                 "padding": "rows past the prompt write cache rows past the prompt only"})),
        runtime=RuntimeInfo("ai-edge-litert", "2.3.0", freeze({"litert_lm": bundle} if bundle else {})),
        report=Report.from_json({"precision": options.precision.value,
                "tflite_bytes": len(data), "signatures": sorted(summary.signatures),
                "composites": inventory["composites"], "op_types": inventory["ops"],
                # one odml.scaled_dot_product_attention composite per layer in every signature
                "attention_blocks_fused": f"{inventory['composites'].get('odml.scaled_dot_product_attention', 0)}"
                                          f"/{spec.num_layers * len(summary.signatures)}",
                "decomposition_op_types": inventory["decomposition_ops"],
                "custom_ops": inventory["custom_ops"], "flex_ops": [],
                "verifier": "slmpack structural verifier + LiteRT flatbuffer verifier",
                "litertlm": bundle["file"] if bundle else None,
                **({"quantization": encoding} if encoding else {}),
                **({"shared_quantization_vectors": shared.to_json()} if shared else {})}),
    )
