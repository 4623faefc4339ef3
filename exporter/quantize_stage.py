"""The quantization stage of the export pipeline (``--quant``), in order:

1. ``preflight``  resolve the recipe (preset or file, ``--algorithm`` override) against the
                  model's weight shapes (a meta-device reference: no weights read), ask the target
                  for ``capabilities(options).quant`` and ``validate_against`` them. An invalid
                  plan fails here with a typed error naming the tensors, before any calibration.
2. ``calibrate``  load calibration windows (default: the bundled calibration.txt), optionally
                  search a mixed-precision recipe for a budget, ``build_plan`` on the fp32
                  reference, and build the fake-quant reference (plan weights + fold overrides),
                  which is what gets traced.
3. ``finish``     after lowering: write ``quant_plan.safetensors`` / ``quant_plan.json`` /
                  ``quant_recipe.json`` into the package, run the target's ``readback`` and
                  return the manifest's ``quantization`` block.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from slmpack import progress
from slmpack.errors import BadInputError, UnsupportedError
from slmpack.exporter.kv_cache import ConcatCache
from slmpack.exporter.reference import ReferenceModel
from slmpack.quantize_config import QuantConfig
from slmpack.runtime.records import thaw

RECIPE_FILE = "quant_recipe.json"


class CalibrationModel(nn.Module):
    """The calibration model contract over our reference: ``model(ids[1, T]) -> logits[1, T, V]``
    with HF module names (``model.layers.0.self_attn.q_proj`` ...), a fresh ConcatCache per call."""

    def __init__(self, ref: ReferenceModel):
        super().__init__()
        self.model = ref.model
        self.lm_head = ref.lm_head
        self._ref = [ref]  # not registered: module names stay HF-shaped

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        ref = self._ref[0]
        s = ref.spec
        empty = torch.zeros(1, s.num_kv_heads, 0, s.head_dim)
        cache = ConcatCache([empty] * s.num_layers, [empty] * s.num_layers)
        return ref.step(ids, torch.arange(ids.shape[1]), cache)


@dataclass(frozen=True)
class Layout:
    shapes: dict[str, tuple[int, int]]
    embeddings: tuple[str, ...]
    ties: dict[str, str]


def model_layout(spec) -> Layout:
    """Weight shapes, embedding names and ties of the reference module, from the spec alone."""
    from slmpack.calibration.build_plan import model_weights

    with torch.device("meta"):
        model = CalibrationModel(ReferenceModel(spec, 2))
    _, shapes, embeds, ties = model_weights(model)
    return Layout(dict(shapes), tuple(embeds), dict(ties))


def load_base_recipe(name: str):
    from slmpack.calibration.recipe import PRESETS, load_recipe, preset

    return preset(name) if name in PRESETS else load_recipe(name)


def with_algorithm(recipe, algorithm: str, layout: Layout):
    """``recipe`` with every linear rule's algorithm replaced; embeddings (and weights tied to
    them) are pinned to their original rule first, since embeddings only support RTN."""
    from dataclasses import replace

    from slmpack.calibration.recipe import Recipe, Rule
    from slmpack.calibration.schemes import Algorithm

    algo = Algorithm(algorithm)
    pinned = []
    for name in sorted(set(layout.embeddings) | {t for t, o in layout.ties.items() if o in layout.embeddings}):
        hit = recipe.match(name)
        if hit is not None:
            pinned.append(Rule(name, hit[1].weight, hit[1].activation))
    rules = [Rule(r.pattern, None if r.weight is None else replace(r.weight, algorithm=algo), r.activation)
             for r in recipe.rules]
    return Recipe(f"{recipe.name}+{algo.value}", (*pinned, *rules))


def capabilities_for(target, options):
    return target.capabilities(options).quant


@dataclass
class QuantPreflight:
    config: QuantConfig
    recipe: object               # calibration.recipe.Recipe
    plan: object                 # decisions only (QuantPlan without numbers)
    capabilities: object | None  # TargetQuantCapabilities
    layout: Layout
    target_name: str


def resolve_and_check(recipe, layout: Layout, caps, target_name: str):
    """Decisions for ``recipe`` validated against shapes and the target; raises before any work."""
    from slmpack.calibration.plan import resolve_plan

    plan = resolve_plan(recipe, layout.shapes, embeddings=layout.embeddings, ties=layout.ties)
    if caps is None and plan.quantized_names():
        names = plan.quantized_names()
        raise UnsupportedError(
            f"target {target_name} cannot encode quantized weights (its capabilities declare no quantization); "
            f"{len(names)} tensor(s) would be quantized, e.g. {names[0]}", "E_QUANT_TARGET_UNSUPPORTED",
            details={"tensors": names})
    plan.validate_against(layout.shapes, caps)
    return plan


def preflight(spec, target, options, qcfg: QuantConfig) -> QuantPreflight | None:
    """Resolve + validate; ``None`` for float exports. Never reads weights or calibration data."""
    if not qcfg.enabled:
        return None
    if qcfg.plan_from is not None:
        return preflight_reused(spec, target, options, qcfg)
    if qcfg.calib_data is not None and not qcfg.calib_data.exists():
        raise BadInputError(f"calibration source not found: {qcfg.calib_data}", "E_CALIB_PATH_MISSING",
                            details={"path": str(qcfg.calib_data)})
    layout = model_layout(spec)
    recipe = load_base_recipe(qcfg.base_recipe)
    if qcfg.algorithm:
        recipe = with_algorithm(recipe, qcfg.algorithm, layout)
    caps = capabilities_for(target, options)
    plan = resolve_and_check(recipe, layout, caps, target.name.value)
    if qcfg.has_budget:  # every candidate the search may pick must be encodable too
        from slmpack.calibration.mixed_precision import candidate_recipes

        for cand in candidate_recipes(recipe, layout):
            resolve_and_check(cand, layout, caps, target.name.value)
    return QuantPreflight(qcfg, recipe, plan, caps, layout, target.name.value)


@dataclass(frozen=True)
class ReusedRecipe:
    """The recipe record of a reused plan: the original recipe file's content when the plan comes
    from a package, else only the plan's recipe name."""
    name: str
    data: dict

    def to_dict(self) -> dict:
        return self.data


def reused_plan_source(path: Path) -> tuple[Path, dict | None]:
    """(folder holding quant_plan.json, its package's manifest or None). ``path`` is a package (its
    plan is the sidecar ``<package>.plan`` beside it, matched by the digest the manifest records),
    a sidecar, or any folder holding quant_plan.json + quant_plan.safetensors."""
    from slmpack.calibration.plan_io import PLAN_JSON
    from slmpack.package import MANIFEST, PLAN_SUFFIX, plan_sidecar, read_manifest, sha256_file

    path = Path(path)
    if not path.is_dir():
        raise BadInputError(f"--quant-plan {path}: not a directory (give a package folder, its {PLAN_SUFFIX} "
                            "sidecar or a folder holding quant_plan.json + quant_plan.safetensors)",
                            "E_QUANT_PLAN_MISSING")
    package = path if (path / MANIFEST).is_file() else None
    if package is None and path.name.endswith(PLAN_SUFFIX) and len(path.name) > len(PLAN_SUFFIX):
        sibling = path.with_name(path.name[: -len(PLAN_SUFFIX)])
        package = sibling if (sibling / MANIFEST).is_file() else None
    folder = path if package is None or package != path else plan_sidecar(path)
    if not (folder / PLAN_JSON).is_file():
        raise BadInputError(f"--quant-plan {path}: no {PLAN_JSON} in {folder} (a quantized package's plan is its "
                            f"sidecar {plan_sidecar(path).name} beside it)", "E_QUANT_PLAN_MISSING")
    if package is None:
        return folder, None
    manifest = read_manifest(package)
    recorded = (manifest.get("quantization") or {}).get("plan_sha256")
    if recorded != sha256_file(folder / PLAN_JSON):
        raise BadInputError(f"--quant-plan {path}: {folder.name} is not the plan package {package.name} was made "
                            "with (its quant_plan.json digest differs from the manifest's)", "E_QUANT_PLAN_MISMATCH")
    return folder, manifest


def preflight_reused(spec, target, options, qcfg: QuantConfig) -> QuantPreflight:
    """Load a calibrated plan and check it against this model's shapes and this target, before
    anything slow. Its checkpoint is compared after loading the weights (``check_reused_source``)."""
    from slmpack.calibration.plan import QuantPlan
    from slmpack.calibration.recipe import recipe_from_dict

    folder, _ = reused_plan_source(qcfg.plan_from)
    plan = QuantPlan.load(folder)
    if not plan.is_calibrated:
        raise BadInputError(f"--quant-plan {folder}: the plan has decisions but no integer weights",
                            "E_QUANT_PLAN_UNCALIBRATED")
    layout = model_layout(spec)
    caps = capabilities_for(target, options)
    if caps is None and plan.quantized_names():
        raise UnsupportedError(f"target {target.name.value} cannot encode quantized weights",
                               "E_QUANT_TARGET_UNSUPPORTED", details={"tensors": plan.quantized_names()})
    plan.validate_against(layout.shapes, caps)
    missing = sorted(set(layout.shapes) - set(plan.decisions))
    if missing:
        raise BadInputError(f"--quant-plan {folder}: the plan has no decision for {len(missing)} tensor(s) of this "
                            f"model (e.g. {missing[0]}): it was made for another architecture",
                            "E_QUANT_PLAN_MISMATCH", details={"tensors": missing})
    rfile = folder / RECIPE_FILE
    recipe = (recipe_from_dict(json.loads(rfile.read_text("utf-8")), str(rfile)) if rfile.is_file()
              else ReusedRecipe(plan.recipe, {"name": plan.recipe}))
    return QuantPreflight(qcfg, recipe, plan, caps, layout, target.name.value)


def check_reused_source(qcfg: QuantConfig, checkpoint_sha256: str) -> None:
    """A reused plan taken from a package must come from the same checkpoint (same bytes)."""
    folder, manifest = reused_plan_source(qcfg.plan_from)
    recorded = ((manifest or {}).get("source") or {}).get("checkpoint_sha256")
    if recorded is not None and recorded != checkpoint_sha256:
        raise BadInputError(f"--quant-plan {folder}: calibrated on checkpoint {recorded[:12]}..., this export's "
                            f"checkpoint is {checkpoint_sha256[:12]}...; calibrate again for this checkpoint",
                            "E_QUANT_PLAN_MISMATCH", details={"plan_checkpoint": recorded,
                                                              "checkpoint": checkpoint_sha256})


def load_windows(model_dir: Path, qcfg: QuantConfig, max_context: int, vocab_size: int) -> torch.Tensor:
    from slmpack.calibration.datasets import CalibrationConfig, load_calibration_windows, load_tokenizer
    from slmpack.bundled import demo_data_dir

    window = min(qcfg.calib_window_tokens, max_context)
    source = qcfg.calib_data or demo_data_dir() / "calibration.txt"
    cfg = CalibrationConfig(source, qcfg.resolved_format(), qcfg.calib_text_field, window, qcfg.calib_windows,
                            qcfg.calib_seed)
    tokenizer, eos = load_tokenizer(model_dir)
    windows = load_calibration_windows(cfg, tokenizer, eos)
    if int(windows.max()) >= vocab_size:
        raise BadInputError(f"calibration text tokenizes to ids >= the model's vocab_size ({vocab_size})",
                            "E_CALIB_TOKENIZER")
    return windows


@dataclass
class QuantResult:
    config: QuantConfig
    plan: object                      # calibrated QuantPlan
    recipe: object                    # the recipe actually used (preset, file or generated)
    reference: ReferenceModel         # fake-quant reference (traced)
    windows_info: dict
    mixed_precision: dict | None = None
    timings: dict = field(default_factory=dict)


def calibrate(pre: QuantPreflight, ref: ReferenceModel, model_dir: Path, max_context: int, spec) -> QuantResult:
    from slmpack.calibration.build_plan import build_plan
    from slmpack.exporter.fake_quant import fake_quant_reference

    t0 = time.perf_counter()
    qcfg = pre.config
    if qcfg.plan_from is not None:   # reused, already calibrated: no data, no search
        folder, manifest = reused_plan_source(qcfg.plan_from)
        q = (manifest or {}).get("quantization") or {}
        info = {**(q.get("calibration") or {}), "reused_from": Path(qcfg.plan_from).name}
        if q.get("mixed_precision"):
            info["mixed_precision_search"] = "done by the export that made the plan (see its manifest)"
        return QuantResult(qcfg, pre.plan, pre.recipe, fake_quant_reference(ref, pre.plan), info, None,
                           {"reused_plan_s": round(time.perf_counter() - t0, 2)})
    try:
        windows = load_windows(model_dir, qcfg, max_context, spec.vocab_size)
    except BadInputError:
        if needs_calibration(pre.plan) or qcfg.has_budget or qcfg.calib_data is not None:
            raise
        windows = torch.zeros((0, 0), dtype=torch.long)  # RTN weight-only: no data needed (e.g. no tokenizer)
    model = CalibrationModel(ref)
    recipe, mixed = pre.recipe, None
    if qcfg.has_budget:
        from slmpack.calibration.mixed_precision import Budget, search

        budget = Budget(max_ppl_increase_pct=qcfg.max_ppl_increase_pct, max_size_bytes=qcfg.max_size_bytes,
                        overhead_bytes=graph_overhead_bytes(ref))
        recipe, mixed = search(model, pre.recipe, windows, budget, pre.layout,
                               check=lambda r: resolve_and_check(r, pre.layout, pre.capabilities, pre.target_name))
    t1 = time.perf_counter()
    plan = build_plan(model, recipe, windows, capabilities=pre.capabilities,
                      progress=lambda stage, done, total: progress.note(f"{stage} {done}/{total}"))
    t2 = time.perf_counter()
    if mixed is not None:  # the real plan (requested algorithm) on the same windows, weights only
        from slmpack.calibration.mixed_precision import achieved

        mixed["achieved_weights_only"] = achieved(model, plan, windows)
        if qcfg.max_ppl_increase_pct is not None:
            mixed["budget_met"] = mixed["achieved_weights_only"]["ppl_increase_pct"] <= qcfg.max_ppl_increase_pct
    info = {"source": (qcfg.calib_data.name if qcfg.calib_data else "calibration.txt (bundled)")
            if windows.numel() else None,
            "format": qcfg.resolved_format().value, "windows": int(windows.shape[0]), "window_tokens": int(windows.shape[1]),
            "seed": qcfg.calib_seed}
    return QuantResult(qcfg, plan, recipe, fake_quant_reference(ref, plan), info, mixed,
                       {"mixed_precision_s": round(t1 - t0, 2), "build_plan_s": round(t2 - t1, 2)})


def needs_calibration(plan) -> bool:
    from slmpack.calibration.schemes import ActivationMode, Algorithm

    return any((d.weight is not None and d.weight.algorithm is not Algorithm.RTN)
               or d.activation.mode is ActivationMode.STATIC_INT8 or d.activation.smoothquant_alpha is not None
               for d in plan.decisions.values())


def graph_overhead_bytes(ref: ReferenceModel) -> int:
    """Float bytes an artifact carries besides the Linear/Embedding weights: norms, biases, rope tables."""
    big = {id(m.weight) for m in ref.modules() if isinstance(m, (nn.Linear, nn.Embedding))}
    n = sum(p.numel() for p in {id(p): p for p in ref.parameters()}.values() if id(p) not in big)
    return 4 * (n + sum(b.numel() for name, b in ref.named_buffers() if name.startswith("rope_")))


def precision_label(plan) -> str:
    """Weight precisions present, widest count first: ``int8``, ``int4+int8``, ``int4+int8+fp32``."""
    counts: dict[str, int] = {}
    for d in plan.decisions.values():
        key = "fp32" if d.weight is None else f"int{d.weight.bits}"
        counts[key] = counts.get(key, 0) + 1
    return "+".join(sorted(counts, key=lambda k: (-counts[k], k))) if counts else "fp32"


def finish(stage: Path, quant: QuantResult, artifact) -> dict:
    """Write the plan (and its recipe) into the package's sidecar, the recipe into the package;
    return the manifest block (the artifact carries its read-back). The package records the plan's
    digest, so a sidecar is matched to its package (``reused_plan_source``, ``validate``)."""
    from slmpack.calibration.plan_io import PLAN_JSON
    from slmpack.package import plan_sidecar, sha256_file

    side = plan_sidecar(stage)   # committed with the package by staged_directory
    side.mkdir(mode=0o755)
    quant.plan.save(side)
    recipe = json.dumps(quant.recipe.to_dict(), indent=2, sort_keys=True) + "\n"
    for folder in (stage, side):
        (folder / RECIPE_FILE).write_text(recipe)
    if quant.mixed_precision is not None and quant.config.max_size_bytes is not None:
        size = sum((stage / f).stat().st_size for f in artifact.files if (stage / f).is_file())
        quant.mixed_precision.update({"artifact_bytes": size, "budget_met": size <= quant.config.max_size_bytes})
    summary = quant.plan.summary()
    by_rule: dict[str, int] = {}
    for d in quant.plan.decisions.values():
        key = "none" if d.rule is None else str(d.rule)
        by_rule[key] = by_rule.get(key, 0) + 1
    return {
        "plan": PLAN_JSON, "plan_sha256": sha256_file(side / PLAN_JSON), "recipe_file": RECIPE_FILE,
        "recipe": quant.recipe.name, "summary": summary, "tensors_by_rule": dict(sorted(by_rule.items())),
        "calibration": quant.windows_info, "mixed_precision": quant.mixed_precision,
        "config": quant.config.to_json(), "timings_s": quant.timings,
        "encoding": {k: thaw(v) for k, v in (artifact.report.details.get("quantization") or {}).items()
                     if k != "tensors"},  # per-tensor details: report.quantization / report.readback
        "readback_passed": artifact.report.readback.passed,
    }


def eval_reference(quant: QuantResult, executed) -> tuple[ReferenceModel, list]:
    """The fake-quant reference for test vectors and the ladder: plan weights, plus activation
    fake-quant and bf16 group scales as the target declares its runtime executes the plan
    (``target.executed_quant``; changed after lowering, never traced). Also returns the
    activation hooks' handles (empty for weight-only plans)."""
    from slmpack.exporter.fake_quant import bf16_scale_weights, install_activation_fake_quant

    bf16_scale_weights(quant.reference, quant.plan, executed.bf16_scales)
    return quant.reference, install_activation_fake_quant(quant.reference, quant.plan, executed)


def fake_quant_note(manifest: dict) -> str:
    enc = (manifest.get("quantization") or {}).get("encoding") or {}
    acts = (manifest.get("quantization") or {}).get("summary", {}).get("by_activation", {})
    notes = []
    if enc.get("dynamic_activation_blocks"):
        notes.append("dynamic int8 activations fake-quantized per (token, block) as the runtime does "
                     "(report.quantization.dynamic_activation_blocks), symmetric absmax/127")
    elif "dynamic_int8" in acts:
        notes.append("dynamic int8 activations fake-quantized per token")
    if any(k.startswith("static_int8") for k in acts):
        notes.append("static int8 activations fake-quantized with the plan's per-tensor scale/zero point")
    return "; ".join(notes)
