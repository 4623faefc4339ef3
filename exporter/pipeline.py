"""The export pipeline: checkpoint -> reference -> traced programs -> target artifact -> package.

Preflight (cheap checks: output path, config, target support) runs before any slow work.
"""
from __future__ import annotations

import dataclasses
import platform
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file

from slmpack.config import ExportConfig
from slmpack.errors import BadInputError, SlmpackError, UnsupportedError, ValidationFailed
from slmpack.exporter import inputs, quantize_stage
from slmpack.exporter.checkpoint import check_headers, checkpoint_digest, load_state_dict, weight_files
from slmpack.exporter.confine import ModelRoot
from slmpack.exporter.kv_cache import CacheUpdate
from slmpack.exporter.reference import build_reference
from slmpack.exporter.reference_runner import ReferenceRunner, greedy
from slmpack.exporter.spec import ModelSpec, load_spec
from slmpack.exporter.trace import trace_programs
from slmpack.package import (MANIFEST, SCHEMA_VERSION, check_keep_failed, check_output_path, discard_failed, hash_tree,
                             staged_directory, write_json)
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


def check_inputs(model_dir: ModelRoot, spec: ModelSpec, cfg: ExportConfig, out: Path,
                 eval_text: Path | None) -> None:
    """Every cheap check of inputs and outputs, before any slow work (typed errors only)."""
    check_output_path(out, cfg.force, model_dir.path)
    check_keep_failed(cfg.keep_failed)
    check_headers(model_dir, cfg.allow_pickle)
    inputs.check_tokenizer_files(model_dir)
    inputs.generation_config(model_dir, spec)
    if eval_text is not None:
        inputs.read_eval_text(eval_text)
    if cfg.quant.enabled and cfg.quant.calib_data is not None:
        inputs.check_readable(cfg.quant.calib_data, "--calib-data", "E_CALIB_PATH_MISSING")


def preflight(model_dir: ModelRoot, target, options, cfg: ExportConfig, out: Path, plan=None) -> ModelSpec:
    check_output_path(out, cfg.force, model_dir.path)
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
    model_dir = ModelRoot(resolve_model_dir(model_dir), cfg.follow_symlinks)
    target = registry.get(target_name)
    options = options if options is not None else target.options_type()
    with progress.stage("preflight"):
        spec = load_spec(model_dir)
        cfg = dataclasses.replace(cfg, trace=cfg.trace.resolved(spec.max_position_embeddings))
        check_inputs(model_dir, spec, cfg, Path(out), eval_text)
        qpre = quantize_stage.preflight(spec, target, options, cfg.quant)  # invalid plans fail here, before calibration
        spec = preflight(model_dir, target, options, cfg, Path(out), plan=qpre.plan if qpre else None)
    with progress.stage("load checkpoint"):
        ref = build_reference(spec, load_state_dict(model_dir, cfg.allow_pickle), cfg.trace.max_context)
        digest = checkpoint_digest(model_dir, cfg.allow_pickle)
        if qpre is not None and cfg.quant.plan_from is not None:
            quantize_stage.check_reused_source(cfg.quant, digest)
        tokenizer = inputs.load_tokenizer(model_dir)
        gen = inputs.generation_config(model_dir, spec)
        eos = inputs.eos_ids(gen)
    quant = None
    if qpre is not None:
        with progress.stage(f"calibrate ({qpre.recipe.name})"):
            quant = quantize_stage.calibrate(qpre, ref, model_dir, cfg.trace.max_context, spec)
    layout = target.layout(options) if hasattr(target, "layout") else target.cache_layout
    with progress.stage(f"trace ({layout.value})"):
        programs = trace_programs(quant.reference if quant else ref, layout, cfg.trace, export_programs=getattr(target, "needs_exported_programs", True),
                                  update=getattr(target, "cache_update", CacheUpdate.INDEX_COPY))
    with staged_directory(Path(out), cfg.force, model_dir.path) as stage:
        inputs.copy_tokenizer_files(model_dir, stage)  # before lowering: a target may bundle the tokenizer
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
                       "model_dir_name": model_dir.path.name},
            "model": {**spec.to_json(), "max_context": cfg.trace.max_context, "max_prompt": cfg.trace.max_prompt,
                      "num_parameters": spec.num_parameters},
            "precision": (quantize_stage.precision_label(quant.plan) if quant else
                          artifact.report.get("precision", cfg.precision.value)),  # a target may encode weights itself
            "quantization": qblock if quant else {"plan": None},
            "io": artifact.io,
            "kv_cache": artifact.kv_cache,
            "runtime": artifact.runtime,
            "tolerance": {"atol": target.tolerance.atol, "rtol": target.tolerance.rtol},
            "report": artifact.report,
            "toolchain": toolchain_versions(target.name.value),
            "tokenizer": {"files": sorted(n for n in inputs.TOKENIZER_FILES if (stage / n).is_file())},
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
            if not manifest["validation"]["passed"]:  # nothing stays at --out
                kept = discard_failed(stage, cfg.keep_failed)
                require_passed(Package(kept or Path(out), manifest), kept)
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


def require_passed(pkg: Package, kept: Path | None = None) -> None:
    if pkg.validation is not None and not pkg.passed:
        v = pkg.validation
        failed = [k for k in ("structural", "vectors", "heldout", "greedy") if not v[k]["passed"]]
        where = f"package moved to {kept}" if kept else "package removed; --keep-failed DIR keeps it"
        raise ValidationFailed(f"{pkg.path}: validation failed at {', '.join(failed)} ({where})",
                               "E_VALIDATION", details=v)


__all__ = ["export", "Package", "SlmpackError", "require_passed"]
