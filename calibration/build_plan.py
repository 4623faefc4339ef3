"""Turn a model + recipe + calibration windows into a calibrated QuantPlan.

Order of work (each phase sees the results of the previous ones):

0. resolve the recipe over every Linear/Embedding weight and validate (shapes, target
   capabilities) — an invalid plan fails here, before any forward pass;
1. SmoothQuant: per-channel activation maxima in one pass, then fold into the RMSNorms;
2. AWQ: per decoder layer, one (early-stopped) pass collects the inputs of the layer's AWQ
   groups; scales are searched and folded on float weights (as in llm-awq, before quantization,
   so folds into v_proj/up_proj happen while those are still float);
3. weights, group by group in execution order (embeddings first): RTN (also for AWQ-scaled
   weights) or GPTQ. Every quantized weight is written back into the model as its dequantized
   value, so each GPTQ group's Hessian is collected from a model whose earlier layers are already
   quantized (sequential GPTQ);
4. static int8 activation ranges from one pass over the weight-quantized model.

The model contract: ``model(input_ids[1, T]) -> logits[1, T, V]`` with HF Llama module names
(``model.layers.{i}.self_attn.q_proj`` ...). Capture passes may abandon a forward call midway
(an exception raised from a hook once the needed inputs are seen), so an adapter around a
cache-based module must build fresh per-call state (e.g. a new KV cache) on every call.
The model is modified while working and restored (values and training mode) before returning.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from slmpack.errors import BadInputError

from .awq import AWQConfig
from .capture import Progress
from .gptq import GPTQConfig
from .layout import FoldRecord, InputGroup, input_groups
from .phases import (Work, activation_phase, awq_phase, fold_overrides, mod_name,
                     smoothquant_phase, weight_phase)
from .plan import QuantPlan, TargetQuantCapabilities, TensorDecision, resolve_plan
from .recipe import Recipe
from .schemes import ActivationMode, Algorithm


def model_weights(model: nn.Module) -> tuple[dict[str, nn.Module], dict[str, tuple[int, int]],
                                              list[str], dict[str, str]]:
    """(modules by module name, weight shapes by tensor name, embedding tensor names, ties
    {tied tensor name: owner tensor name}) for every Linear/Embedding in module order."""
    modules, shapes, embeds, ties, owners = {}, {}, [], {}, {}
    for name, mod in model.named_modules(remove_duplicate=False):
        if not isinstance(mod, (nn.Linear, nn.Embedding)) or name in modules:
            continue
        tname = f"{name}.weight"
        modules[name] = mod
        shapes[tname] = tuple(mod.weight.shape)
        if isinstance(mod, nn.Embedding):
            embeds.append(tname)
        owner = owners.setdefault(id(mod.weight), tname)
        if owner != tname:
            ties[tname] = owner
    return modules, shapes, embeds, ties


def resolve_model_plan(model: nn.Module, recipe: Recipe) -> QuantPlan:
    """Decisions only, for ``model``'s weights (no calibration)."""
    _, shapes, embeds, ties = model_weights(model)
    return resolve_plan(recipe, shapes, embeddings=embeds, ties=ties)


@dataclass(frozen=True)
class _Prepared:
    plan: QuantPlan
    groups: list[InputGroup]
    windows: torch.Tensor


def _prepare(model, recipe, calib_windows, capabilities) -> _Prepared:
    _, shapes, embeds, ties = model_weights(model)
    plan = resolve_plan(recipe, shapes, embeddings=embeds, ties=ties)
    plan.validate_against(shapes, capabilities)
    dec = plan.decisions
    windows = _check_windows(calib_windows, _needs_calibration(dec))
    linear = {mod_name(n): (d.shape[0], d.shape[1]) for n, d in dec.items()
              if d.kind == "linear"}
    groups = input_groups(linear, frozenset(mod_name(n) for n, d in dec.items() if d.tied_to))
    names = {n for n, _ in model.named_modules()}
    missing = sorted({g.prev for g in groups if g.prev is not None} - names)
    if missing and _needs_calibration(dec):
        raise BadInputError(f"model lacks the modules the fold layout expects: "
                            f"{', '.join(missing)}", "E_QUANT_MODEL_LAYOUT")
    return _Prepared(plan, groups, windows)


@contextmanager
def _working(model: nn.Module):
    work = Work(model)
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield work
    finally:
        work.restore()
        for m, training in modes:
            m.training = training


def build_plan(model: nn.Module, recipe: Recipe, calib_windows: torch.Tensor, *,
               capabilities: TargetQuantCapabilities | None = None,
               gptq: GPTQConfig = GPTQConfig(), awq: AWQConfig = AWQConfig(),
               progress: Progress | None = None) -> QuantPlan:
    """Calibrate ``recipe`` on ``model`` with ``calib_windows`` (LongTensor [N, T]).

    ``progress(stage, done, total)`` is called after each calibration forward pass and after
    each quantized group. The model is left exactly as it was."""
    p = _prepare(model, recipe, calib_windows, capabilities)
    dec, groups, windows = p.plan.decisions, p.groups, p.windows
    with _working(model) as work:
        folds = smoothquant_phase(work, groups, dec, windows, progress)
        folds += awq_phase(work, groups, dec, windows, awq, progress)
        weights = weight_phase(work, groups, dec, windows, gptq, progress)
        acts = activation_phase(work, dec, windows, progress)
        overrides = fold_overrides(work, dec)
    calib = {"num_windows": int(windows.shape[0]), "window": int(windows.shape[1]),
             "windows_sha256": hashlib.sha256(windows.to(torch.int64).numpy().tobytes()
                                              ).hexdigest(),
             "gptq": {"damp_percent": gptq.damp_percent, "block_size": gptq.block_size,
                      "act_order": gptq.act_order},
             "awq": {"n_grid": awq.n_grid, "max_rows": awq.max_rows,
                     "unscaled": _awq_unscaled(groups, dec)}}
    return QuantPlan(recipe=recipe.name, decisions=dec, weights=weights, activations=acts,
                     float_overrides=overrides, folds=tuple(folds), calibration=calib)


def fold_scales(model: nn.Module, recipe: Recipe, calib_windows: torch.Tensor, *,
                awq: AWQConfig = AWQConfig(), progress: Progress | None = None
                ) -> tuple[dict[str, torch.Tensor], tuple[FoldRecord, ...]]:
    """Only the SmoothQuant and AWQ folds of ``recipe``, before any quantization: returns the
    modified float tensors ``{tensor name: float32}`` and the fold records. Loading those
    tensors into the model leaves its float function unchanged (up to rounding)."""
    p = _prepare(model, recipe, calib_windows, None)
    dec, groups, windows = p.plan.decisions, p.groups, p.windows
    with _working(model) as work:
        folds = smoothquant_phase(work, groups, dec, windows, progress)
        folds += awq_phase(work, groups, dec, windows, awq, progress)
        changed = {full: work.params[full].detach().to(torch.float32).clone()
                   for full, before in sorted(work.saved.items())
                   if not torch.equal(work.params[full], before)}
    return changed, tuple(folds)


def _awq_unscaled(groups: list[InputGroup], dec) -> list[str]:
    """AWQ tensors with no foldable predecessor (e.g. o_proj under GQA): plain RTN instead."""
    return sorted(f"{m}.weight" for g in groups if g.prev is None for m in g.members
                  if dec[f"{m}.weight"].weight is not None
                  and dec[f"{m}.weight"].weight.algorithm is Algorithm.AWQ)


def _needs_calibration(dec: Mapping[str, TensorDecision]) -> bool:
    return any((d.weight is not None and d.weight.algorithm is not Algorithm.RTN)
               or d.activation.mode is ActivationMode.STATIC_INT8
               or d.activation.smoothquant_alpha is not None for d in dec.values())


def _check_windows(w: torch.Tensor, needed: bool) -> torch.Tensor:
    if not isinstance(w, torch.Tensor) or w.dim() != 2 or w.dtype.is_floating_point:
        raise BadInputError("calibration windows must be an integer tensor [N, T]",
                            "E_CALIB_WINDOWS")
    if needed and (w.shape[0] == 0 or w.shape[1] == 0):
        raise BadInputError("this recipe needs calibration data but no windows were given",
                            "E_CALIB_EMPTY")
    return w.to(torch.long)


