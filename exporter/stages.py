"""The export pipeline's stages, each a function of the one ``ExportState`` (``exporter/pipeline.py``).

Model-level stages run once per export (however many targets); target-level stages run for each
requested target inside its staging directory. Only these stages run the reference model.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file

from slmpack.bundled import demo_model_dir
from slmpack.errors import BadInputError, UnsupportedError, ValidationFailed
from slmpack.exporter import chat_template, inputs, lora, quantize_stage
from slmpack.exporter.checkpoint import check_headers, checkpoint_digest, load_state_dict, weight_files
from slmpack.exporter.reference import build_reference
from slmpack.exporter.reference_runner import ReferenceRunner, answer, greedy
from slmpack.exporter.spec import load_spec
from slmpack.exporter.trace import trace_programs
from slmpack.package import MANIFEST, check_keep_failed, check_output_path, discard_failed, hash_tree, write_json
from slmpack.quantize_config import QuantConfig
from slmpack.runtime.manifest import Manifest
from slmpack.targets.base import Consumes, Unsupported

TOOLCHAIN = ("torch", "onnx", "onnxruntime", "onnxscript", "executorch", "coremltools", "litert-torch",
             "ai-edge-litert", "tokenizers", "numpy")
VALIDATION_PROMPT = "Return the"


def _version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "absent"


def toolchain_versions() -> dict[str, str]:
    return {"python": platform.python_version(), "slmpack": _version("slmpack"), **{n: _version(n) for n in TOOLCHAIN}}


# ---- model-level stages (once) ------------------------------------------------------------------
def load(st) -> None:
    st.spec = load_spec(st.model_dir)
    st.cfg = dataclasses.replace(st.cfg, trace=st.cfg.trace.resolved(st.spec.max_position_embeddings))
    weight_files(st.model_dir, st.cfg.allow_pickle)
    if st.cfg.trace.max_context > st.spec.max_position_embeddings:
        raise BadInputError(f"--max-context {st.cfg.trace.max_context} exceeds the model's max_position_embeddings "
                            f"({st.spec.max_position_embeddings})", "E_CONFIG", details={"field": "max_context"})
    check_inputs(st)


def check_inputs(st) -> None:
    """Every cheap check of the model's other files and the user's paths, before any slow work."""
    check_keep_failed(st.cfg.keep_failed)
    shapes = check_headers(st.model_dir, st.cfg.allow_pickle)
    if st.cfg.adapter is not None:   # parsed and shape-checked against the base before any slow work
        st.adapter = lora.read_adapter(st.cfg.adapter, st.cfg.follow_symlinks)
        if all(p.suffix == ".safetensors" for p in weight_files(st.model_dir, st.cfg.allow_pickle)):
            lora.check_against(st.adapter, shapes)
    inputs.check_tokenizer_files(st.model_dir)
    inputs.generation_config(st.model_dir, st.spec)
    if st.eval_text is not None:
        inputs.read_eval_text(st.eval_text)
    if st.cfg.quant.enabled and st.cfg.quant.calib_data is not None:
        inputs.check_readable(st.cfg.quant.calib_data, "--calib-data", "E_CALIB_PATH_MISSING")


def preflight(st) -> None:
    """Every requested target, before any slow work: output path, quant plan, target support."""
    for job in st.jobs:
        with st.per_target(job):
            check_output_path(job.out, st.cfg.force, st.model_dir.path)
            job.qpre = quantize_stage.preflight(st.spec, job.target, job.options, st.cfg.quant)
            problems = job.target.preflight(st.spec, job.options, job.qpre.plan if job.qpre else None)
            if st.cfg.separate_adapter and not job.target.capabilities(job.options).separate_adapters:
                problems.append(Unsupported("--adapter-mode separate", "this runtime cannot swap LoRA adapters; "
                                            "use --adapter-mode merged (every target)"))
            if problems:
                raise UnsupportedError(f"target {job.target.name.value} cannot export this model: "
                                       + summarize_problems(problems), "E_TARGET_UNSUPPORTED",
                                       details={"problems": [str(p) for p in problems]})


def summarize_problems(problems, shown: int = 3) -> str:
    """One clause per distinct reason, naming its first ``shown`` subjects and counting the rest
    (a per-tensor refusal would otherwise repeat one sentence for every linear of the model)."""
    by_reason: dict[str, list[str]] = {}
    for p in problems:
        by_reason.setdefault(p.reason, []).append(p.what)
    clauses = []
    for reason, whats in by_reason.items():
        names = ", ".join(whats[:shown]) + (f" and {len(whats) - shown} more" if len(whats) > shown else "")
        clauses.append(f"{names}: {reason}")
    return "; ".join(clauses)


def load_checkpoint(st) -> None:
    weights = load_state_dict(st.model_dir, st.cfg.allow_pickle)
    st.digest = checkpoint_digest(st.model_dir, st.cfg.allow_pickle)
    if st.adapter is not None:   # the package's source is base + adapter: the digest covers both
        if not st.cfg.separate_adapter:
            weights = lora.merge(weights, st.adapter)
        st.digest = hashlib.sha256(f"{st.digest}\0adapter\0{st.adapter.sha256}".encode()).hexdigest()
    st.ref = build_reference(st.spec, weights, st.cfg.trace.max_context)
    if st.cfg.separate_adapter and (why := lora.inseparable(st.ref, st.adapter)):
        raise UnsupportedError("--adapter-mode separate: " + "; ".join(why), "E_ADAPTER_UNSUPPORTED")
    if st.cfg.quant.enabled and st.cfg.quant.plan_from is not None:
        quantize_stage.check_reused_source(st.cfg.quant, st.digest)
    st.tokenizer = inputs.load_tokenizer(st.model_dir)
    st.source_gen = inputs.generation_config(st.model_dir, st.spec)
    st.chat = chat_template.chat_info(st.model_dir, st.tokenizer, st.source_gen)
    st.gen = chat_template.with_stops(st.source_gen, st.chat)   # every runtime's stop list
    st.eos = inputs.eos_ids(st.gen)


# ---- target-level stages (per target, in its staging directory) ----------------------------------
def calibrate(st, job) -> None:
    """Calibrate once for all targets: the first quantized package's plan is reused by the others
    (``plan_from``: the same plan bytes, checked against each target's capabilities in preflight)."""
    if st.first_quant_package is not None and job.qpre.config.plan_from is None:
        cfg = QuantConfig(plan_from=st.first_quant_package)
        job.qpre = quantize_stage.preflight_reused(st.spec, job.target, job.options, cfg)
    job.quant = quantize_stage.calibrate(job.qpre, st.ref, st.model_dir, st.cfg.trace.max_context, st.spec)


def trace(st, job) -> None:
    ref = job.quant.reference if job.quant else st.ref
    with lora.branches(ref, st.adapter) if st.cfg.separate_adapter else contextlib.nullcontext():
        job.programs = trace_programs(ref, job.target.layout(job.options), st.cfg.trace,
                                      export_programs=job.target.consumes is Consumes.EXPORTED_PROGRAM,
                                      update=job.target.cache_update)


def lower(st, job) -> None:
    inputs.copy_tokenizer_files(st.model_dir, job.stage)  # before lowering: a target may bundle the tokenizer
    if st.chat.template is not None:
        (job.stage / chat_template.TEMPLATE_FILE).write_text(st.chat.template, encoding="utf-8")
    if inputs.eos_ids(st.gen) != inputs.eos_ids(st.source_gen):
        write_json(job.stage / "generation_config.json", st.gen)   # the full stop list
    job.artifact = job.target.lower(job.programs, st.spec, job.options, job.stage, st.gen,
                                    plan=job.quant.plan if job.quant else None)
    if job.quant is not None:   # the plan's integers read back from what the target wrote
        job.artifact = job.artifact.with_readback(job.target.readback(job.stage, job.quant.plan))
        job.qblock = quantize_stage.finish(job.stage, job.quant, job.artifact)
    if not (job.stage / "generation_config.json").exists():
        write_json(job.stage / "generation_config.json", st.gen)


KV_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "int8": 1}


def kv_cache_bytes(spec, context: int, kv_cache) -> int:
    """K and V of every layer at the full context, in the cache's dtype."""
    per = KV_DTYPE_BYTES.get(kv_cache.dtype, 4)
    return 2 * spec.num_layers * spec.num_kv_heads * spec.head_dim * int(context) * per


def build_vectors(ref_runner, tokens: np.ndarray, greedy_prompt: np.ndarray, cfg, eos) -> dict:
    v = cfg.validation
    prompt = tokens[: v.test_prompt_tokens]
    dec = tokens[v.test_prompt_tokens: v.test_prompt_tokens + v.test_decode_tokens]
    ref_runner.reset()
    pre_logits = ref_runner.prefill(prompt)
    dec_logits = [ref_runner.decode(int(t), len(prompt) + i) for i, t in enumerate(dec)]
    return {
        "prompt_ids": prompt.astype(np.int64), "prefill_logits": pre_logits.astype(np.float32),
        "decode_ids": dec.astype(np.int64), "decode_logits": np.stack(dec_logits).astype(np.float32),
        "greedy_prompt_ids": greedy_prompt.astype(np.int64),
        "greedy_ids": np.array(greedy(ref_runner, greedy_prompt, v.greedy_tokens, eos), dtype=np.int64),
    }


def kv_dtype(job) -> str:
    """The dtype the package's KV cache stores (the reference rounds to it)."""
    return job.artifact.kv_cache.dtype


def reference_vectors(st, job) -> None:
    torch.manual_seed(0)
    job.eval_ref, hooks = st.ref, []
    if job.quant:
        executed = job.target.executed_quant(job.options, job.quant.plan)
        job.eval_ref, hooks = quantize_stage.eval_reference(job.quant, executed)
    v = st.cfg.validation
    n_eval = max(v.heldout_tokens, v.test_prompt_tokens + v.test_decode_tokens)
    job.heldout, job.heldout_src = inputs.heldout_tokens(st.tokenizer, st.spec.vocab_size, n_eval, st.eval_text)
    job.gprompt = inputs.prompt_ids(st.tokenizer, VALIDATION_PROMPT, st.spec.vocab_size)
    runner = ReferenceRunner(job.eval_ref, kv_dtype(job))
    job.vectors = build_vectors(runner, job.heldout, job.gprompt, st.cfg, st.eos)
    if hooks:   # dynamic activations: their own effect bounds runtime-vs-reference rounding differences
        from slmpack.exporter import activation_slack
        from slmpack.exporter.fake_quant import install_activation_fake_quant

        job.vectors.update(activation_slack.measure(
            job.eval_ref, hooks, lambda: install_activation_fake_quant(job.eval_ref, job.quant.plan, executed),
            job.vectors, job.heldout, min(st.cfg.trace.max_prompt, 128), kv_dtype(job)))
    save_file(job.vectors, str(job.stage / "test_vectors.safetensors"), metadata={"format": "slmpack-test-vectors-1"})
    # the inputs the target declares (LiteRT's prefill signatures, ExecuTorch's bundled cases)
    requests = job.target.reference_requests(st.spec, job.options, st.cfg.trace)
    if requests:
        job.target.write_reference(job.stage, job.options, tuple(answer(runner, r) for r in requests))
    if st.cfg.separate_adapter:   # what the package computes with its adapter active: base + LoRA path
        with lora.branches(job.eval_ref, st.adapter):
            vec = build_vectors(ReferenceRunner(job.eval_ref, kv_dtype(job)), job.heldout, job.gprompt, st.cfg,
                                st.eos)
        save_file(vec, str(job.stage / lora.VECTORS_FILE), metadata={"format": "slmpack-test-vectors-1"})


def package(st, job) -> None:
    """The typed manifest (validated: every file field names a package file) over the staged files."""
    a, spec, cfg, quant = job.artifact, st.spec, st.cfg, job.quant
    data = {
        "schema_version": 1, "target": job.target.name.value, "artifact": a.primary,
        "source": {"checkpoint_sha256": st.digest, "architecture": spec.architecture,
                   "model_dir_name": st.model_dir.path.name, **({"gguf": st.gguf.to_json()} if st.gguf else {}),
                   **({"adapter": st.adapter.summary()} if st.adapter is not None else {})},
        "model": {**spec.to_json(), "max_context": cfg.trace.max_context, "max_prompt": cfg.trace.max_prompt,
                  "num_parameters": spec.num_parameters},
        "precision": (quantize_stage.precision_label(quant.plan) if quant else
                      a.report.precision or cfg.precision.value),  # a target may encode weights itself
        "quantization": job.qblock if quant else {"plan": None},
        "io": a.io.to_json(),
        "kv_cache": {**a.kv_cache.to_json(), "bytes": kv_cache_bytes(spec, cfg.trace.max_context, a.kv_cache)},
        "runtime": a.runtime.to_json(), "report": a.report.to_json(),
        "tolerance": job.target.tolerance(job.options, quant.plan if quant else None).to_json(),
        "toolchain": toolchain_versions(),
        "tokenizer": {"files": sorted(n for n in (*inputs.TOKENIZER_FILES, chat_template.TEMPLATE_FILE)
                                      if (job.stage / n).is_file()), "chat": st.chat.to_json()},
        "test_vectors": {"file": "test_vectors.safetensors", "eval_text": job.heldout_src,
                         "prompt": VALIDATION_PROMPT, "reference": "fake_quant" if quant else "fp32"},
        "files": hash_tree(job.stage),
    }
    job.manifest = Manifest.from_json(data).to_json()
    write_json(job.stage / MANIFEST, job.manifest)


def ladder(st, job) -> None:
    """The validation ladder (one call site; its result goes into the manifest)."""
    from slmpack.validation import run_ladder

    cfg, m = st.cfg, job.manifest
    runner = job.target.runner(job.stage, m)
    if job.quant is not None:  # quantized: pass/fail vs the plan's fake-quant reference, fp32 deltas reported
        from slmpack.validation import run_quant_ladder

        result = run_quant_ladder(job.target, job.stage, m, runner, ReferenceRunner(st.ref),
                                  ReferenceRunner(job.eval_ref, kv_dtype(job)), job.vectors, job.heldout,
                                  job.gprompt, cfg.validation.greedy_tokens, st.eos, quantize_stage.fake_quant_note(m),
                                  cfg.validation.max_ppl_loss)
    else:
        exact = m["precision"] == "fp32"
        result = run_ladder(job.target, job.stage, m, runner, ReferenceRunner(st.ref, kv_dtype(job)), job.vectors,
                            job.heldout, job.gprompt, cfg.validation.greedy_tokens, st.eos, exact)
    job.manifest = Manifest.from_json({**m, "validation": result}).to_json()
    write_json(job.stage / MANIFEST, job.manifest)
    if not result["passed"]:  # nothing stays at --out: removed, or moved to --keep-failed
        kept = discard_failed(job.stage, st.cfg.keep_failed)
        where = f"package moved to {kept}" if kept else "package removed; --keep-failed DIR keeps it"
        raise validation_failure(job.out, result, where)


LADDER_STEPS = ("structural", "vectors", "heldout", "greedy", "long_context", "tokenizer_parity")


def validation_failure(path, v: dict, where: str) -> ValidationFailed:
    """The one error for a failed ladder: the accuracy gate when the plan itself loses too much
    (whatever the encoding), else the failed steps."""
    gate = (v.get("heldout_fp32") or {}).get("gate")
    if gate:
        return ValidationFailed(f"{path}: {gate} ({where})", "E_ACCURACY_GATE", details=v)
    failed = [k for k in LADDER_STEPS if k in v and not v[k]["passed"]]
    return ValidationFailed(f"{path}: validation failed at {', '.join(failed)} ({where})", "E_VALIDATION",
                            details=v)


def resolve_model_dir(model_dir: Path | None) -> Path:
    if model_dir is None:
        return demo_model_dir()
    model_dir = Path(model_dir)
    if not model_dir.exists():
        raise BadInputError(f"{model_dir}: no such directory", "E_MODEL_DIR_MISSING")
    if not model_dir.is_dir():
        raise BadInputError(f"{model_dir}: not a directory", "E_MODEL_DIR_INVALID")
    return model_dir
