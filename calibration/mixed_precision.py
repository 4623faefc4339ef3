"""Automatic mixed precision: the smallest per-unit int4 / int8 / float plan within a budget.

Each unit (see :mod:`.sensitivity`) climbs a ladder of levels, smallest first:

    0  the base recipe's schemes for the unit's tensors (e.g. int4 g32 from ``int4`` / ``8da4w``)
    1  int8 per-channel, symmetric, same algorithm, same activation scheme (skipped if level 0 is int8)
    2  float (float activations)

Budgets (:class:`Budget`):

* ``max_ppl_increase_pct``: start with every unit at level 0; while the *measured* perplexity
  increase (RTN fake-quant of the whole assignment on calibration windows) exceeds the budget,
  move up the unit whose next level buys the most sensitivity (KL when only that unit is
  quantized) per added byte. Result: the smallest plan found that meets the budget.
* ``max_size_bytes``: start at level 0 (fail if even that does not fit); while an upgrade still
  fits, take the one with the best sensitivity reduction per byte. Result: the most accurate
  plan found that fits.

Sensitivities come from RTN weight fake-quant (activations unquantized), so the search is cheap;
the pipeline then calibrates the generated recipe with the requested algorithm and reports the
achieved perplexity increase of the real plan. The output is an ordinary :class:`Recipe` (one
exact-name rule per tensor), saved in the package so the export can be reproduced.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from slmpack.errors import BadInputError, UnsupportedError

from .recipe import Recipe, Rule
from .schemes import FLOAT_ACTIVATIONS, ActivationMode, WeightScheme
from .sensitivity import Unit, logits_on, measure, scheme_bytes, unit_sensitivity, units

EVAL_WINDOWS = 8  # calibration windows used to measure sensitivities and the budget


@dataclass(frozen=True)
class Budget:
    max_ppl_increase_pct: float | None = None
    max_size_bytes: int | None = None
    overhead_bytes: int = 0  # float bytes the artifact carries besides the weights (norms, rope)

    def to_json(self) -> dict:
        return {"max_ppl_increase_pct": self.max_ppl_increase_pct, "max_size_bytes": self.max_size_bytes,
                "overhead_bytes": self.overhead_bytes}


def _base_rules(recipe: Recipe, names) -> dict[str, Rule | None]:
    out = {}
    for n in names:
        hit = recipe.match(n)
        out[n] = None if hit is None else hit[1]
    return out


def _levels(unit: Unit, base: dict[str, Rule | None]) -> list[dict[str, Rule | None]]:
    """Per level, {tensor: Rule or None (float)} for the unit."""
    lv0 = {t: base[t] if base[t] is not None and base[t].weight is not None else None for t in unit.tensors}
    levels = [lv0]
    if any(r is not None and r.weight.bits < 8 for r in lv0.values()):
        lv1 = {}
        for t, r in lv0.items():
            if r is None:
                lv1[t] = None
            else:
                w8 = WeightScheme(bits=8, group_size=None, symmetric=True, algorithm=r.weight.algorithm)
                lv1[t] = Rule(t, w8, r.activation)
        levels.append(lv1)
    if any(r is not None for r in levels[-1].values()):
        levels.append({t: None for t in unit.tensors})
    return levels


def _schemes(level: dict[str, Rule | None]) -> dict[str, WeightScheme | None]:
    return {t: None if r is None else r.weight for t, r in level.items()}


def _bytes(unit: Unit, level, shapes, ties) -> int:
    return sum(scheme_bytes(shapes[t], None if level[t] is None else level[t].weight)
               for t in unit.tensors if t not in ties)


def candidate_recipes(recipe: Recipe, layout) -> list[Recipe]:
    """Recipes using every scheme the search may choose (for validation before calibration)."""
    base = _base_rules(recipe, layout.shapes)
    for r in base.values():
        if r is not None and r.activation.mode is ActivationMode.STATIC_INT8:
            raise UnsupportedError("mixed precision (--max-ppl-increase / --max-size) supports weight-only and "
                                   "dynamic-activation recipes, not static int8 activations (e.g. w8a8)",
                                   "E_QUANT_MIXED_UNSUPPORTED")
    us = units(layout.shapes, layout.embeddings, layout.ties)
    top = {}
    for u in us:
        lv = _levels(u, base)
        top.update(lv[1] if len(lv) > 2 else lv[0])
    return [to_recipe(f"{recipe.name}-int8-candidates", top, layout.shapes)]


def to_recipe(name: str, rules: dict[str, Rule | None], shapes) -> Recipe:
    out = []
    for t in sorted(shapes):
        r = rules.get(t)
        out.append(Rule(t, None, FLOAT_ACTIVATIONS) if r is None else Rule(t, r.weight, r.activation))
    return Recipe(name, tuple(out))


def search(model, recipe: Recipe, windows: torch.Tensor, budget: Budget, layout,
           check: Callable[[Recipe], object] | None = None) -> tuple[Recipe, dict]:
    """(generated recipe, report) for ``budget``; ``check(recipe)`` validates a candidate."""
    if (budget.max_ppl_increase_pct is None) == (budget.max_size_bytes is None):
        raise BadInputError("mixed precision needs exactly one budget", "E_CONFIG")
    shapes, ties = layout.shapes, layout.ties
    base = _base_rules(recipe, shapes)
    us = units(shapes, layout.embeddings, ties)
    ladders = {u.name: _levels(u, base) for u in us}
    ev = windows[:EVAL_WINDOWS]
    ref_logits = logits_on(model, ev)
    sens = {u.name: [unit_sensitivity(model, ev, ref_logits, u, _schemes(lv)) for lv in ladders[u.name]]
            for u in us}
    size = {u.name: [_bytes(u, lv, shapes, ties) for lv in ladders[u.name]] for u in us}
    level = {u.name: 0 for u in us}

    def total_bytes() -> int:
        return budget.overhead_bytes + sum(size[u][level[u]] for u in level)

    def assignment() -> dict:
        out = {}
        for u in us:
            out.update(_schemes(ladders[u.name][level[u.name]]))
        return out

    def best_upgrade(fits: Callable[[int], bool]):
        best = None
        for u in us:
            i = level[u.name]
            if i + 1 >= len(ladders[u.name]):
                continue
            added = size[u.name][i + 1] - size[u.name][i]
            if not fits(added):
                continue
            gain = sens[u.name][i]["kl"] - sens[u.name][i + 1]["kl"]
            score = gain / max(added, 1)
            if best is None or score > best[0]:
                best = (score, u.name)
        return None if best is None else best[1]

    steps = []
    measured = measure(model, ev, ref_logits, assignment())
    if budget.max_ppl_increase_pct is not None:
        while measured["ppl_increase_pct"] > budget.max_ppl_increase_pct:
            u = best_upgrade(lambda _added: True)
            if u is None:
                break
            level[u] += 1
            measured = measure(model, ev, ref_logits, assignment())
            steps.append({"unit": u, "level": level[u], "ppl_increase_pct": measured["ppl_increase_pct"]})
        met = measured["ppl_increase_pct"] <= budget.max_ppl_increase_pct
    else:
        if total_bytes() > budget.max_size_bytes:
            raise UnsupportedError(f"even the smallest plan ({total_bytes()} bytes with every unit at its lowest "
                                   f"precision) exceeds --max-size {budget.max_size_bytes} bytes",
                                   "E_QUANT_BUDGET", details={"smallest_bytes": total_bytes()})
        while True:
            u = best_upgrade(lambda added: total_bytes() + added <= budget.max_size_bytes)
            if u is None:
                break
            level[u] += 1
            steps.append({"unit": u, "level": level[u], "bytes": total_bytes()})
        measured = measure(model, ev, ref_logits, assignment())
        met = total_bytes() <= budget.max_size_bytes
    chosen = {}
    for u in us:
        chosen.update(ladders[u.name][level[u.name]])
    tag = (f"ppl{budget.max_ppl_increase_pct:g}pct" if budget.max_ppl_increase_pct is not None
           else f"{budget.max_size_bytes}B")
    out = to_recipe(f"{recipe.name}-mixed-{tag}", chosen, shapes)
    if check is not None:
        check(out)
    report = {
        "budget": budget.to_json(), "base_recipe": recipe.name, "eval_windows": int(ev.shape[0]),
        "met_on_calibration": bool(met), "estimated_bytes": total_bytes(),
        "rtn_estimate": {"ppl_increase_pct": measured["ppl_increase_pct"], "kl": measured["kl"]},
        "steps": steps,
        "units": [{"unit": u.name, "tensors": len(u.tensors), "level": level[u.name],
                   "scheme": _label(ladders[u.name][level[u.name]]),
                   "levels": [{"scheme": _label(lv), "bytes": size[u.name][i], **sens[u.name][i]}
                              for i, lv in enumerate(ladders[u.name])]} for u in us],
    }
    return out, report


def _label(level: dict[str, Rule | None]) -> str:
    labels = sorted({"float" if r is None else r.weight.label for r in level.values()})
    return "+".join(labels)


def achieved(model, plan, windows: torch.Tensor) -> dict:
    """Perplexity increase / KL of a calibrated plan's fake-quant weights on the eval windows."""
    ev = windows[:EVAL_WINDOWS]
    ref_logits = logits_on(model, ev)
    params = dict(model.named_parameters(remove_duplicate=False))
    sd = {n: params[n].detach() for n in plan.decisions if n in params}
    new = plan.fake_quant_state_dict(sd)
    saved = {n: p.detach().clone() for n, p in params.items()}
    try:
        with torch.no_grad():
            for n, v in new.items():
                params[n].copy_(v)
            for n, v in plan.float_overrides.items():
                if n in params:
                    params[n].copy_(v)
        from .sensitivity import compare

        m = compare(ref_logits, logits_on(model, ev), ev)
    finally:
        with torch.no_grad():
            for n, v in saved.items():
                params[n].copy_(v)
    return {"ppl_increase_pct": m["ppl_increase_pct"], "kl": m["kl"]}


__all__ = ["Budget", "search", "candidate_recipes", "achieved", "to_recipe"]
