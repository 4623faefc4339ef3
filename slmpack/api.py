"""The Python API; mirrors the CLI one function per command."""
from __future__ import annotations

from pathlib import Path


import dataclasses

from slmpack.config import ExportConfig
from slmpack.exporter import pipeline
from slmpack.exporter.pipeline import Package
from slmpack.package import verify as _verify
from slmpack.progress import QUIET, Progress
from slmpack.quantize_config import QuantConfig
from slmpack.targets import registry


def export(model_dir: str | Path | None = None, target: str = "onnx", out: str | Path = "slmpack-out",
           config: ExportConfig = ExportConfig(), options=None, progress: Progress = QUIET,
           eval_text: str | Path | None = None, quant: str | QuantConfig | None = None) -> Package:
    """Export ``model_dir`` (default: the bundled demo model) to one validated package at ``out``.

    ``quant``: a preset (``"int8"``, ``"int4"``, ``"8da4w"``, ``"w8a8"``), a recipe file path, or a
    full ``QuantConfig`` (calibration data, algorithm, budget); overrides ``config.quant``."""
    if quant is not None:
        config = dataclasses.replace(config, quant=quant if isinstance(quant, QuantConfig)
                                     else QuantConfig(recipe=str(quant)))
    return pipeline.export(Path(model_dir) if model_dir else None, target, Path(out), config, options, progress,
                           Path(eval_text) if eval_text else None)


def verify(package: str | Path) -> dict:
    """Re-hash every file of a package; raises PackageIntegrityError naming what changed."""
    return _verify(Path(package))


def validate(package: str | Path) -> dict:
    """Re-run the ladder steps that need no source model (``PACKAGE_ONLY``: structure, test
    vectors, greedy tokens) through the runtime kit, with the target's declared tolerance."""
    from slmpack.runtime import ladder, safetensors, tolerance
    from slmpack.runtime.loaded import load

    loaded = load(package)        # integrity first: nothing of a tampered package is run
    m, pkg = loaded.manifest, loaded.path
    target = registry.get(m.target.value)
    manifest = m.to_json()

    readback = "not a quantized package"

    def structural() -> list[str]:
        nonlocal readback
        problems = list(target.check(pkg, manifest))
        if m.quantization.plan is not None:
            readback, rb_problems = _sidecar_readback(target, pkg, m.quantization.plan_sha256)
            problems += rb_problems
        return problems

    x = ladder.LadderInputs(runner=loaded.runner(), tolerance=tolerance.checked(m),
                            vectors=safetensors.load(pkg / m.test_vectors.file), exact=m.exact,
                            structural=structural, eos=m.model.eos_token_ids)
    result = ladder.run(ladder.PACKAGE_ONLY, x)
    return {"package": str(pkg), "target": m.target.value, **result, "readback": readback}


def _sidecar_readback(target, pkg: Path, plan_sha256: str | None) -> tuple[str, list[str]]:
    """(what was done, problems): the artifact's integers against the plan sidecar beside the
    package, when it is there (an app's copy of the package has none: nothing to compare)."""
    from slmpack.calibration.plan import QuantPlan
    from slmpack.calibration.plan_io import PLAN_JSON
    from slmpack.package import plan_sidecar, sha256_file

    side = plan_sidecar(pkg)
    if side.is_symlink() or not (side / PLAN_JSON).is_file():
        return f"skipped: no plan sidecar {side.name} beside the package", []
    if sha256_file(side / PLAN_JSON) != plan_sha256:
        return "failed", [f"read-back: {side.name} is not this package's plan (quant_plan.json digest differs)"]
    rb = target.readback(pkg, QuantPlan.load(side))  # the stored integers are still the plan's
    return ("passed" if not rb.problems else "failed"), [f"read-back: {p}" for p in rb.problems]


def inspect(model_dir: str | Path | None = None) -> dict:
    """What slmpack understood from a checkpoint: family, sizes, parameters, memory per precision."""
    from slmpack.exporter.checkpoint import weight_files
    from slmpack.exporter.spec import load_spec

    from slmpack.exporter.gguf.reader import is_gguf

    if is_gguf(model_dir):   # from its metadata and tensor shapes; nothing is dequantized
        from slmpack.exporter.gguf.source import gguf_spec

        d, spec = Path(model_dir), gguf_spec(Path(model_dir))
        files = [d]
    else:
        d = pipeline.resolve_model_dir(Path(model_dir) if model_dir else None)
        spec = load_spec(d)
        files = weight_files(d, allow_pickle=True)
    n = spec.num_parameters
    mb = 1024 * 1024
    return {
        "model_dir": str(d), **spec.to_json(),
        "weight_files": [f.name for f in files],
        "weights_mb": {"fp32": round(n * 4 / mb, 2), "fp16": round(n * 2 / mb, 2), "int8": round(n / mb, 2),
                       "int4": round(n * 0.5 / mb, 2)},
        "kv_cache_mb_per_1k_tokens_fp32": round(spec.kv_cache_bytes(1024) / mb, 2),
        "supported_targets": registry.available(),
    }


