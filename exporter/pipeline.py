"""The export pipeline: a literal ordered list of stages over one ``ExportState``.

  load -> preflight every requested target -> load checkpoint -> per target: calibrate (once for
  all targets) -> trace -> lower -> reference vectors -> package -> ladder -> commit

Preflight (output paths, config, plans, target support) runs for every target before any slow
work. Each target's package is staged beside its output and renamed into place (the commit) only
when complete. The stages themselves are in ``exporter/stages.py``.
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slmpack.config import ExportConfig
from slmpack.errors import BadInputError, SlmpackError
from slmpack.exporter import stages
from slmpack.exporter.encoder.spec import is_encoder_dir
from slmpack.confine import ModelRoot
from slmpack.exporter.gguf.reader import is_gguf
from slmpack.exporter.stages import resolve_model_dir
from slmpack.package import staged_directory
from slmpack.progress import QUIET, Progress
from slmpack.quantize_config import QuantConfig
from slmpack.targets import registry

MODEL_STAGES = (("preflight", stages.load), ("preflight", stages.preflight), ("load checkpoint", stages.load_checkpoint))
def ALWAYS(st, job) -> bool:
    return True



TARGET_STAGES = (("calibrate", stages.calibrate, lambda st, job: job.qpre is not None),
                 ("trace", stages.trace, ALWAYS), ("lower", stages.lower, ALWAYS),
                 ("reference test vectors", stages.reference_vectors, ALWAYS), ("package", stages.package, ALWAYS),
                 ("validate", stages.ladder, lambda st, job: st.cfg.validate))


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


@dataclass
class TargetJob:
    """One requested target and what its stages produced."""

    target: Any
    options: Any
    out: Path
    qpre: Any = None          # quantize_stage.QuantPreflight | None
    quant: Any = None         # quantize_stage.QuantResult | None
    programs: Any = None
    stage: Path | None = None
    artifact: Any = None
    qblock: dict | None = None
    eval_ref: Any = None
    heldout: Any = None
    heldout_src: str | None = None
    gprompt: Any = None
    vectors: dict | None = None
    manifest: dict | None = None
    failed: bool = False


@dataclass
class ExportState:
    model_dir: ModelRoot
    cfg: ExportConfig
    jobs: list[TargetJob]
    eval_text: Path | None = None
    keep_going: bool = False                 # multi-target: record a target's error, go on with the others
    gguf: Any = None                         # exporter.gguf.source.GgufSummary when the model is a .gguf file
    spec: Any = None
    ref: Any = None
    digest: str | None = None
    tokenizer: Any = None
    gen: dict = field(default_factory=dict)
    source_gen: dict = field(default_factory=dict)   # generation_config as the checkpoint has it
    chat: Any = None                                 # chat_template.ChatInfo
    adapter: Any = None                              # lora.LoraAdapter (--adapter), merged at load
    eos: tuple[int, ...] = ()
    first_quant_package: Path | None = None
    packages: list[Package] = field(default_factory=list)
    errors: list[tuple[str, SlmpackError]] = field(default_factory=list)

    @contextlib.contextmanager
    def per_target(self, job: TargetJob):
        try:
            yield
        except SlmpackError as e:
            if not self.keep_going:
                raise
            job.failed = True
            self.errors.append((job.target.name.value, e))


def run(st: ExportState, progress: Progress = QUIET) -> ExportState:
    for label, stage in MODEL_STAGES:
        with progress.stage(label):
            stage(st)
    for job in st.jobs:
        if job.failed:
            continue
        with st.per_target(job), staged_directory(job.out, st.cfg.force, st.model_dir.path) as job.stage:
            for label, stage, applies in TARGET_STAGES:
                if applies(st, job):
                    with progress.stage(f"{label} ({job.target.name.value})"):
                        stage(st, job)
        if not job.failed:   # committed
            st.packages.append(Package(job.out, job.manifest))
            if job.quant is not None and st.first_quant_package is None:
                st.first_quant_package = job.out
    return st


def export_many(model_dir: Path | None, requests: list[tuple[str, Path, Any]], cfg: ExportConfig = ExportConfig(),
                progress: Progress = QUIET, eval_text: Path | None = None, keep_going: bool = False) -> ExportState:
    """Export one package per (target name, out, options) request; calibrates once for all.
    ``model_dir`` may be a ``.gguf`` file: it is materialised as a model directory first."""
    if is_gguf(model_dir):
        from slmpack.exporter.gguf.source import materialised

        with contextlib.ExitStack() as stack:
            with progress.stage("read gguf"):
                src = stack.enter_context(materialised(model_dir, cfg.quant.from_gguf))
            if src.plan_dir is not None:   # the file's own blocks, reused like any calibrated plan
                cfg = dataclasses.replace(cfg, quant=QuantConfig(plan_from=src.plan_dir))
            return _export_many(src.model_dir, requests, cfg, progress, eval_text, keep_going, src.summary)
    if cfg.quant.from_gguf:
        raise BadInputError("--quant from-gguf needs a .gguf model file", "E_CONFIG", details={"field": "quant"})
    return _export_many(model_dir, requests, cfg, progress, eval_text, keep_going, None)


def _export_many(model_dir, requests, cfg, progress, eval_text, keep_going, gguf) -> ExportState:
    if is_encoder_dir(resolve_model_dir(model_dir)):  # BERT / DistilBERT / sentence-transformers
        return export_encoders(model_dir, requests, cfg, progress, eval_text, keep_going)
    jobs = []
    for name, out, options in requests:
        target = registry.get(name)
        jobs.append(TargetJob(target, options if options is not None else target.options_type(), Path(out)))
    st = ExportState(ModelRoot(resolve_model_dir(model_dir), cfg.follow_symlinks), cfg, jobs, eval_text, keep_going,
                     gguf=gguf)
    return run(st, progress)


def export_encoders(model_dir, requests, cfg, progress, eval_text, keep_going) -> ExportState:
    """The encoder flow (exporter/encoder/pipeline.py), one package per request."""
    from slmpack.exporter.encoder.pipeline import export_encoder

    st = ExportState(resolve_model_dir(model_dir), cfg, [], eval_text, keep_going)
    for name, out, _options in requests:
        try:
            st.packages.append(export_encoder(st.model_dir, name, Path(out), cfg, progress, eval_text))
        except SlmpackError as e:
            if not keep_going:
                raise
            st.errors.append((name, e))
    return st


def export(model_dir: Path | None, target_name: str, out: Path, cfg: ExportConfig = ExportConfig(),
           options=None, progress: Progress = QUIET, eval_text: Path | None = None) -> Package:
    """Export one target package to ``out`` (atomic). Raises SlmpackError subclasses."""
    return export_many(model_dir, [(target_name, out, options)], cfg, progress, eval_text).packages[0]


def require_passed(pkg: Package) -> None:
    if pkg.validation is not None and not pkg.passed:
        raise stages.validation_failure(pkg.path, pkg.validation, "package kept for inspection")


__all__ = ["export", "export_many", "Package", "ExportState", "SlmpackError", "require_passed", "resolve_model_dir"]
