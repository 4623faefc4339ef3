"""Checks behind :meth:`QuantPlan.validate_against`: every problem of every tensor, collected.

Run before any calibration so an invalid plan costs nothing. Returns ``{tensor: [reasons]}``
sorted by name; the caller raises one typed error.
"""
from __future__ import annotations

from collections.abc import Mapping

from .decisions import TargetQuantCapabilities
from .layout import input_groups
from .schemes import ActivationMode, Algorithm


def _module(name: str) -> str:
    return name[:-len(".weight")] if name.endswith(".weight") else name


def plan_problems(plan,  # a QuantPlan (plan.py imports this module, not the reverse)
                  shapes: Mapping[str, tuple[int, ...]],
                  caps: TargetQuantCapabilities | None) -> dict[str, list[str]]:
    problems: dict[str, list[str]] = {}

    def add(name: str, reason: str) -> None:
        problems.setdefault(name, []).append(reason)

    for name, d in plan.decisions.items():
        actual = shapes.get(name)
        if actual is None:
            add(name, "not a weight of this model")
        elif tuple(actual) != tuple(d.shape):
            add(name, f"plan shape {list(d.shape)} != model shape {list(actual)}")
        if len(d.shape) != 2:
            add(name, f"expected a 2-D weight, got shape {list(d.shape)}")
            continue
        w = d.weight
        if d.kind == "embedding" and d.activation.mode is not ActivationMode.NONE:
            add(name, "embeddings read token ids: activation mode must be 'none'")
        if w is not None and w.group_size is not None and d.shape[1] % w.group_size:
            add(name, f"group size {w.group_size} does not divide in_features {d.shape[1]}")
        if w is not None and d.kind == "embedding" and w.algorithm is not Algorithm.RTN:
            add(name, f"embeddings support only RTN, not {w.algorithm.value}")
        if d.tied_to is not None:
            owner = plan.decisions.get(d.tied_to)
            if owner is None:
                add(name, f"tied to {d.tied_to!r}, which is not in the plan")
            elif owner.weight != w:
                mine = "float" if w is None else w.label
                theirs = "float" if owner.weight is None else owner.weight.label
                add(name, f"shares storage with {d.tied_to} but its scheme {mine} differs from "
                          f"{theirs} (a tied tensor is quantized once)")
        if caps is not None:
            _capability_problems(name, d, caps, add)

    _group_problems(plan, add)
    return {n: problems[n] for n in sorted(problems)}


def _capability_problems(name, d, caps, add) -> None:
    w = d.weight
    if w is not None:
        allowed_bits = caps.embedding_bits if d.kind == "embedding" else caps.weight_bits
        if w.bits not in allowed_bits:
            add(name, f"target {caps.name} cannot run int{w.bits} {d.kind} weights "
                      f"(supports {sorted(allowed_bits)})")
        if w.group_size not in caps.group_sizes:
            label = "per-channel" if w.group_size is None else f"group size {w.group_size}"
            supported = sorted(("per-channel" if g is None else str(g)) for g in caps.group_sizes)
            add(name, f"target {caps.name} cannot run {label} (supports {', '.join(supported)})")
        if not w.symmetric and not caps.asymmetric_weights:
            add(name, f"target {caps.name} supports only symmetric weights")
    if d.activation.mode not in caps.activation_modes:
        add(name, f"target {caps.name} cannot run {d.activation.mode.value} activations")


def _group_problems(plan, add) -> None:
    linear = {_module(n): d for n, d in plan.decisions.items()
              if d.kind == "linear" and len(d.shape) == 2}
    in_out = {m: (d.shape[0], d.shape[1]) for m, d in linear.items()}
    tied = frozenset(m for m, d in linear.items() if d.tied_to)
    for group in input_groups(in_out, tied):
        decs = [linear[m] for m in group.members]
        awq = [d for d in decs if d.weight is not None and d.weight.algorithm is Algorithm.AWQ]
        if awq and group.prev is not None and len(awq) != len(decs):
            others = ", ".join(d.name for d in decs if d not in awq)
            for d in awq:
                add(d.name, f"AWQ scales are shared by every linear reading the same input; "
                            f"these do not use AWQ: {others}")
        alphas = {d.activation.smoothquant_alpha for d in decs}
        if alphas != {None}:
            for d in decs:
                if len(alphas) > 1:
                    add(d.name, "linears reading the same input need the same smoothquant_alpha "
                                f"(group: {', '.join(x.name for x in decs)})")
                elif group.prev_kind != "norm":
                    add(d.name, "SmoothQuant folds into a preceding RMSNorm; this linear has none"
                                + (" (tied weight)" if d.tied_to else ""))
