"""QuantPlan: the single source of truth every target encodes.

Per weight tensor (Linear / Embedding ``.weight``, keyed by tensor name) a :class:`TensorDecision`
(what scheme, which rule chose it, tie), and for quantized tensors the numbers themselves:

* integer weights: int8 ``[rows, cols]`` in the signed range of the bit width (int4 unpacked in
  [-8, 7]; targets pack), scales float32 ``[rows, n_groups]`` (n_groups = 1 per-channel), zero
  points int8 ``[rows, n_groups]`` as signed offsets, or absent (symmetric). Dequantization is
  ``(q - zp) * scale`` per group (see :mod:`.rtn` for the full convention);
* static int8 activation parameters per linear input: scale and optional zero point;
* ``float_overrides``: float tensors changed by AWQ/SmoothQuant folds (RMSNorm weights, biases),
  which a target must use instead of the checkpoint's values;
* ``folds``: the record of those folds (scales are also stored).

Ties: when ``lm_head.weight`` shares storage with ``model.embed_tokens.weight`` the numbers are
stored once, under the first name in module order (the owner, normally the embedding); the other
decision has ``tied_to=<owner>`` and must have the same weight scheme (its activation scheme is
its own). Persistence lives in :mod:`.plan_io`.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch

from slmpack.errors import BadInputError, UnsupportedError

from .layout import FoldRecord
from .recipe import Recipe
from .rtn import QuantizedWeight, dequantize
from .decisions import ActivationQParams, DecisionKind, TargetQuantCapabilities, TensorDecision
from .schemes import FLOAT_ACTIVATIONS, ActivationMode, ActivationScheme, WeightScheme


def resolve_plan(recipe: Recipe, shapes: Mapping[str, tuple[int, ...]], *,
                 embeddings: Iterable[str] = (), ties: Mapping[str, str] | None = None
                 ) -> QuantPlan:
    """Decisions only (no numbers): apply ``recipe`` to every weight name in ``shapes``.

    ``embeddings`` names the Embedding weights; ``ties`` maps a tied name to its owner's name."""
    embeddings, ties = set(embeddings), dict(ties or {})
    decisions = {}
    for name in sorted(shapes):
        hit = recipe.match(name)
        rule, r = (None, None) if hit is None else hit
        decisions[name] = TensorDecision(
            name=name, kind=DecisionKind.EMBEDDING if name in embeddings else DecisionKind.LINEAR,
            shape=tuple(int(d) for d in shapes[name]),
            weight=None if r is None else r.scheme_for(int(shapes[name][-1])),
            activation=FLOAT_ACTIVATIONS if r is None else r.activation,
            rule=rule, tied_to=ties.get(name))
    return QuantPlan(recipe=recipe.name, decisions=decisions)


@dataclass(frozen=True, eq=False)  # holds tensors: compare fields explicitly
class QuantPlan:
    recipe: str
    decisions: Mapping[str, TensorDecision]
    weights: Mapping[str, QuantizedWeight] = field(default_factory=dict)
    activations: Mapping[str, ActivationQParams] = field(default_factory=dict)
    float_overrides: Mapping[str, torch.Tensor] = field(default_factory=dict)
    folds: tuple[FoldRecord, ...] = ()
    calibration: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "decisions", dict(sorted(self.decisions.items())))
        object.__setattr__(self, "weights", dict(sorted(self.weights.items())))
        object.__setattr__(self, "activations", dict(sorted(self.activations.items())))
        object.__setattr__(self, "float_overrides", dict(sorted(self.float_overrides.items())))
        object.__setattr__(self, "folds", tuple(self.folds))

    # ---- queries -------------------------------------------------------------------------
    def owner(self, name: str) -> str:
        d = self.decisions.get(name)
        if d is None:
            raise BadInputError(f"tensor {name!r} is not in the quantization plan",
                                "E_QUANT_PLAN_TENSOR")
        return d.tied_to or name

    def quantized_names(self) -> list[str]:
        return [n for n, d in self.decisions.items() if d.weight is not None]

    @property
    def is_calibrated(self) -> bool:
        return all(self.owner(n) in self.weights for n in self.quantized_names())

    def dequantized(self, name: str) -> torch.Tensor:
        """float32 weight as every target will see it (tied names resolve to their owner)."""
        owner = self.owner(name)
        if self.decisions[name].weight is None:
            raise BadInputError(f"tensor {name!r} is kept float in this plan",
                                "E_QUANT_NOT_QUANTIZED")
        qw = self.weights.get(owner)
        if qw is None:
            raise BadInputError(f"plan has no numbers for {owner!r} (not calibrated yet)",
                                "E_QUANT_PLAN_UNCALIBRATED")
        return dequantize(qw.q, qw.scale, qw.zero_point, qw.group_size)

    def fake_quant_state_dict(self, state_dict: Mapping[str, torch.Tensor]
                              ) -> dict[str, torch.Tensor]:
        """A new state dict: quantized weights dequantized, fold overrides applied; other
        entries are passed through unchanged. Dtypes follow ``state_dict``."""
        out = {}
        for key, value in state_dict.items():
            if key in self.float_overrides:
                out[key] = self.float_overrides[key].to(value.dtype)
            elif key in self.decisions and self.decisions[key].weight is not None:
                out[key] = self.dequantized(key).to(value.dtype)
            else:
                out[key] = value
        return out

    def summary(self) -> dict:
        """Counts, bytes and bits per weight. Quantized bytes = packed integers + float32 scales
        + one byte per zero point, as stored in the plan; tied tensors are counted once."""
        by_scheme: dict[str, int] = {}
        by_act: dict[str, int] = {}
        qparams = fparams = qbytes = 0
        for name, d in self.decisions.items():
            label = "float" if d.weight is None else d.weight.label
            by_scheme[label] = by_scheme.get(label, 0) + 1
            by_act[d.activation.label] = by_act.get(d.activation.label, 0) + 1
            if d.tied_to:
                continue
            numel = d.shape[0] * d.shape[1]
            if d.weight is None:
                fparams += numel
                continue
            groups = d.shape[0] * (1 if d.weight.group_size is None
                                   else d.shape[1] // d.weight.group_size)
            qparams += numel
            qbytes += numel * d.weight.bits // 8 + 4 * groups \
                + (0 if d.weight.symmetric else groups)
        return {
            "tensors": len(self.decisions),
            "quantized_tensors": sum(1 for d in self.decisions.values() if d.weight is not None),
            "tied_tensors": sum(1 for d in self.decisions.values() if d.tied_to),
            "by_weight_scheme": dict(sorted(by_scheme.items())),
            "by_activation": dict(sorted(by_act.items())),
            "quantized_params": qparams, "float_params": fparams, "quantized_bytes": qbytes,
            "bits_per_weight": round(8.0 * qbytes / qparams, 4) if qparams else None,
            "static_activation_tensors": len(self.activations),
            "folds": len(self.folds), "float_overrides": len(self.float_overrides),
        }

    # ---- validation ----------------------------------------------------------------------
    def validate_against(self, shapes: Mapping[str, tuple[int, ...]],
                         capabilities: TargetQuantCapabilities | None = None) -> None:
        """Raise one UnsupportedError (``E_QUANT_PLAN_INVALID``) naming every offending tensor:
        shape mismatches, group sizes that do not divide the input dimension, embedding or tie
        inconsistencies, AWQ/SmoothQuant without a foldable predecessor, and anything the
        target's ``capabilities`` cannot run."""
        from .validate_plan import plan_problems

        problems = plan_problems(self, shapes, capabilities)
        if problems:
            target = f" for target {capabilities.name!r}" if capabilities else ""
            listing = "; ".join(f"{n}: {', '.join(r)}" for n, r in problems.items())
            raise UnsupportedError(
                f"quantization plan{target} is invalid for {len(problems)} tensor(s): {listing}",
                "E_QUANT_PLAN_INVALID", details={"tensors": problems})

    # ---- persistence ---------------------------------------------------------------------
    def save(self, directory) -> None:
        """Write ``quant_plan.safetensors`` + ``quant_plan.json`` (deterministic bytes)."""
        from .plan_io import save_plan

        save_plan(self, directory)

    @classmethod
    def load(cls, directory) -> QuantPlan:
        from .plan_io import read_plan

        return cls(**read_plan(directory))
