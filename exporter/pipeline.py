"""The export pipeline: checkpoint -> reference -> traced programs -> target artifact -> package.

Preflight (cheap checks: output path, config, target support) runs before any slow work.
"""
from __future__ import annotations

import dataclasses
import platform
import shutil
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file

from slmpack.config import ExportConfig
from slmpack.errors import BadInputError, SlmpackError, UnsupportedError, ValidationFailed
from slmpack.exporter import chat_template, inputs, quantize_stage
from slmpack.exporter.checkpoint import checkpoint_digest, load_state_dict, weight_files
from slmpack.exporter.kv_cache import CacheUpdate
from slmpack.exporter.reference import build_reference
from slmpack.exporter.reference_runner import ReferenceRunner, greedy
from slmpack.exporter.spec import ModelSpec, load_spec
from slmpack.exporter.trace import trace_programs
from slmpack.package import MANIFEST, SCHEMA_VERSION, check_output_path, hash_tree, staged_directory, write_json
from slmpack.progress import QUIET, Progress
from slmpack.targets import registry
from slmpack.validation import run_ladder

TOOLCHAIN = ("torch", "onnx", "onnxruntime", "onnxscript", "executorch", "coremltools", "litert-torch",
             "ai-edge-litert", "tokenizers", "numpy")
VALIDATION_PROMPT = "Return the"


@dataclass
class Package:
    path: Path
    manifest: dict

    @property
    def target(self) -> str:
        return self.manifest["target"]

    @property
    def validation(self) -> dict | None:
        return self.manifest.get("validation")

    @property
    def passed(self) -> bool:
        v = self.validation
        return bool(v and v.get("passed"))


def toolchain_versions(target_name: str) -> dict[str, str]:
    out = {"python": platform.python_version(), "slmpack": _version("slmpack")}
    for name in TOOLCHAIN:
        out[name] = _version(name)
    return out


def _version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "absent"


def resolve_model_dir(model_dir: Path | None) -> Path:
    if model_dir is None:
        return inputs.demo_model_dir()
    model_dir = Path(model_dir)
    if not model_dir.exists():
        raise BadInputError(f"{model_dir}: no such directory", "E_MODEL_DIR_MISSING")
    if not model_dir.is_dir():
        raise BadInputError(f"{model_dir}: not a directory", "E_MODEL_DIR_INVALID")
    return model_dir


def preflight(model_dir: Path, target, options, cfg: ExportConfig, out: Path, plan=None) -> ModelSpec:
    check_output_path(out, cfg.force)
    spec = load_spec(model_dir)
    weight_files(model_dir, cfg.allow_pickle)
    if cfg.trace.max_context > spec.max_position_embeddings:
        raise BadInputError(f"--max-context {cfg.trace.max_context} exceeds the model's max_position_embeddings "
                            f"({spec.max_position_embeddings})", "E_CONFIG", details={"field": "max_context"})
    problems = target.supports(spec, options, plan)
    if problems:
        raise UnsupportedError(f"target {target.name.value} cannot export this model: "
                               + "; ".join(str(p) for p in problems), "E_TARGET_UNSUPPORTED")
    return spec


KV_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "int8": 1}


def kv_cache_bytes(spec: ModelSpec, context: int, kv_cache: dict) -> int:
    """K and V of every layer at the full context, in the cache's dtype."""
    per = KV_DTYPE_BYTES.get(kv_cache.get("dtype", "float32"), 4)
    return 2 * spec.num_layers * spec.num_kv_heads * spec.head_dim * int(context) * per


def build_vectors(ref_runner, tokens: np.ndarray, greedy_prompt: np.ndarray, cfg: ExportConfig, eos) -> dict:
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


def export(model_dir: Path | None, target_name: str, out: Path, cfg: ExportConfig = ExportConfig(),
           options=None, progress: Progress = QUIET, eval_text: Path | None = None) -> Package:
    """Export one target package to ``out`` (atomic). Raises SlmpackError subclasses."""
    model_dir = resolve_model_dir(model_dir)
    target = registry.get(target_name)
    options = options if options is not None else target.options_type()
    with progress.stage("preflight"):
        spec = load_spec(model_dir)
        cfg = dataclasses.replace(cfg, trace=cfg.trace.resolved(spec.max_position_embeddings))
        check_output_path(Path(out), cfg.force)
        qpre = quantize_stage.preflight(spec, target, options, cfg.quant)  # invalid plans fail here, before calibration
        spec = preflight(model_dir, target, options, cfg, Path(out), plan=qpre.plan if qpre else None)
    with progress.stage("load checkpoint"):
        ref = build_reference(spec, load_state_dict(model_dir, cfg.allow_pickle), cfg.trace.max_context)
        digest = checkpoint_digest(model_dir, cfg.allow_pickle)
        if qpre is not None and cfg.quant.plan_from is not None:
            quantize_stage.check_reused_source(cfg.quant, digest)
        tokenizer = inputs.load_tokenizer(model_dir)
        source_gen = inputs.generation_config(model_dir, spec)
        chat = chat_template.chat_info(model_dir, tokenizer, source_gen)
        gen = chat_template.with_stops(source_gen, chat)
        eos = inputs.eos_ids(gen)
    quant = None
    if qpre is not None:
        with progress.stage(f"calibrate ({qpre.recipe.name})"):
            quant = quantize_stage.calibrate(qpre, ref, model_dir, cfg.trace.max_context, spec)
    layout = target.layout(options) if hasattr(target, "layout") else target.cache_layout
    with progress.stage(f"trace ({layout.value})"):
        programs = trace_programs(quant.reference if quant else ref, layout, cfg.trace, export_programs=getattr(target, "needs_exported_programs", True),
                                  update=getattr(target, "cache_update", CacheUpdate.INDEX_COPY))
    with staged_directory(Path(out), cfg.force) as stage:
        for name in inputs.TOKENIZER_FILES:  # before lowering: a target may bundle the tokenizer
            if (model_dir / name).is_file() and not (stage / name).exists():
                shutil.copyfile(model_dir / name, stage / name)
        if chat.template is not None:
            (stage / chat_template.TEMPLATE_FILE).write_text(chat.template, encoding="utf-8")
        if inputs.eos_ids(gen) != inputs.eos_ids(source_gen):
            write_json(stage / "generation_config.json", gen)   # the full stop list
        with progress.stage(f"lower to {target.name.value}"):
            artifact = target.lower(programs, spec, options, stage, gen, **({"plan": quant.plan} if quant else {}))
        if quant is not None:
            with progress.stage("quant plan + read-back"):
                qblock = quantize_stage.finish(target, stage, quant, artifact)
        if not (stage / "generation_config.json").exists():
            write_json(stage / "generation_config.json", gen)
        with progress.stage("reference test vectors"):
            torch.manual_seed(0)
            eval_ref = quantize_stage.eval_reference(quant, artifact) if quant else ref  # fake-quant for plans
            ref_runner = ReferenceRunner(eval_ref)
            n_eval = max(cfg.validation.heldout_tokens, cfg.validation.test_prompt_tokens
                         + cfg.validation.test_decode_tokens)
            heldout, heldout_src = inputs.heldout_tokens(tokenizer, spec.vocab_size, n_eval, eval_text)
            gprompt = inputs.prompt_ids(tokenizer, VALIDATION_PROMPT, spec.vocab_size)
            vectors = build_vectors(ref_runner, heldout, gprompt, cfg, eos)
            save_file(vectors, str(stage / "test_vectors.safetensors"), metadata={"format": "slmpack-test-vectors-1"})
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "target": target.name.value,
            "artifact": artifact.primary,
            "source": {"checkpoint_sha256": digest, "architecture": spec.architecture,
                       "model_dir_name": model_dir.name},
            "model": {**spec.to_json(), "max_context": cfg.trace.max_context, "max_prompt": cfg.trace.max_prompt,
                      "num_parameters": spec.num_parameters},
            "precision": (quantize_stage.precision_label(quant.plan) if quant else
                          artifact.report.get("precision", cfg.precision.value)),  # a target may encode weights itself
            "quantization": qblock if quant else {"plan": None},
            "io": artifact.io,
            "kv_cache": {**artifact.kv_cache, "bytes": kv_cache_bytes(spec, cfg.trace.max_context, artifact.kv_cache)},
            "runtime": artifact.runtime,
            "tolerance": {"atol": target.tolerance.atol, "rtol": target.tolerance.rtol},
            "report": artifact.report,
            "toolchain": toolchain_versions(target.name.value),
            "tokenizer": {"files": sorted(n for n in inputs.TOKENIZER_FILES if (stage / n).is_file())},
            "chat": chat.to_json(),
            "test_vectors": {"file": "test_vectors.safetensors", "eval_text": heldout_src,
                             "prompt": VALIDATION_PROMPT, "reference": "fake_quant" if quant else "fp32"},
        }
        if hasattr(target, "tolerance_for"):  # the tolerance this package is validated with
            tol = target.tolerance_for(manifest)
            manifest["tolerance"] = {"atol": tol.atol, "rtol": tol.rtol}
        manifest["files"] = hash_tree(stage)
        write_json(stage / MANIFEST, manifest)
        if cfg.validate:
            with progress.stage("validate"):
                manifest["validation"] = validate_staged(target, stage, manifest, ref, vectors, heldout, gprompt,
                                                         eos, cfg, eval_ref if quant else None)
            write_json(stage / MANIFEST, manifest)
    pkg = Package(Path(out), manifest)
    return pkg


def validate_staged(target, pkg_dir, manifest, ref, vectors, heldout, gprompt, eos, cfg, fq_ref=None) -> dict:
    runner = target.runner(pkg_dir, manifest)
    if fq_ref is not None:  # quantized: pass/fail vs the plan's fake-quant reference, fp32 deltas reported
        from slmpack.quant_validation import run_quant_ladder

        return run_quant_ladder(target, pkg_dir, manifest, runner, ReferenceRunner(ref), ReferenceRunner(fq_ref),
                                vectors, heldout, gprompt, cfg.validation.greedy_tokens, eos,
                                quantize_stage.fake_quant_note(manifest))
    exact = manifest["precision"] == "fp32" and manifest["quantization"]["plan"] is None
    return run_ladder(target, pkg_dir, manifest, runner, ReferenceRunner(ref), vectors, heldout, gprompt,
                      cfg.validation.greedy_tokens, eos, exact)


def require_passed(pkg: Package) -> None:
    if pkg.validation is not None and not pkg.passed:
        v = pkg.validation
        failed = [k for k in ("structural", "vectors", "heldout", "greedy", "long_context",
                                "tokenizer_parity") if k in v and not v[k]["passed"]]
        raise ValidationFailed(f"{pkg.path}: validation failed at {', '.join(failed)} "
                               f"(package kept for inspection)", "E_VALIDATION", details=v)


__all__ = ["export", "Package", "SlmpackError", "require_passed"]
