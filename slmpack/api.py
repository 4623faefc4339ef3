"""The Python API; mirrors the CLI one function per command."""
from __future__ import annotations

from pathlib import Path


import dataclasses

from slmpack.config import ExportConfig
from slmpack.exporter import pipeline
from slmpack.exporter.pipeline import Package
from slmpack.package import read_manifest, verify as _verify
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
    """Re-run the ladder steps that need no source model: structure, test vectors, greedy tokens."""
    from safetensors.numpy import load_file

    from slmpack.exporter.reference_runner import greedy
    from slmpack.runtime.records import Tolerance
    from slmpack.validation import check_vectors

    pkg = Path(package)
    _verify(pkg)
    manifest = read_manifest(pkg)
    target = registry.get(manifest["target"])
    vectors = load_file(str(pkg / manifest["test_vectors"]["file"]))
    structural = target.check(pkg, manifest)
    if (manifest.get("quantization") or {}).get("plan"):
        from slmpack.calibration.plan import QuantPlan

        rb = target.readback(pkg, QuantPlan.load(pkg))  # the stored integers are still the plan's
        structural = structural + [f"read-back: {p}" for p in rb.problems]
    runner = target.runner(pkg, manifest)
    tol = Tolerance.from_json(manifest["tolerance"])
    vec = check_vectors(runner, vectors, tol)
    want = [int(t) for t in vectors["greedy_ids"]]
    eos = tuple(int(e) for e in (manifest["model"].get("eos_token_ids") or []))
    got = greedy(runner, vectors["greedy_prompt_ids"], len(want), eos)
    exact = manifest.get("precision") == "fp32" and not manifest.get("quantization", {}).get("plan")
    greedy_ok = got == want or not exact
    result = {"package": str(pkg), "target": manifest["target"],
              "structural": {"problems": structural, "passed": not structural}, "vectors": vec,
              "greedy": {"match": got == want, "tokens": len(want), "passed": greedy_ok}}
    result["passed"] = bool(not structural and vec["passed"] and greedy_ok)
    return result


def inspect(model_dir: str | Path | None = None) -> dict:
    """What slmpack understood from a checkpoint: family, sizes, parameters, memory per precision."""
    from slmpack.exporter.checkpoint import weight_files
    from slmpack.exporter.spec import load_spec

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


