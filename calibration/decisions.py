"""The records a QuantPlan is made of (no numbers, no I/O): per-tensor decisions, what a target
can run, activation quantization parameters. ``plan.py``, ``plan_io.py`` and ``validate_plan.py``
all import from here, never from each other at module level."""
from __future__ import annotations

import enum
from dataclasses import dataclass

from .schemes import ActivationMode, ActivationScheme, WeightScheme


class DecisionKind(str, enum.Enum):
    LINEAR = "linear"
    EMBEDDING = "embedding"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class TensorDecision:
    """What the recipe decided for one weight (no numbers)."""

    name: str
    kind: DecisionKind
    shape: tuple[int, int]        # [out, in] / [vocab, hidden]
    weight: WeightScheme | None   # None: keep float
    activation: ActivationScheme
    rule: int | None              # index of the recipe rule that matched; None: no rule matched
    tied_to: str | None = None

    def to_json(self) -> dict:
        return {"kind": self.kind.value, "shape": list(self.shape), "rule": self.rule,
                "weight": None if self.weight is None else self.weight.to_dict(),
                "activation": self.activation.to_dict(), "tied_to": self.tied_to}


@dataclass(frozen=True)
class TargetQuantCapabilities:
    """What a target can run; it hands this to ``validate_against`` before any calibration."""

    name: str = "target"
    weight_bits: frozenset[int] = frozenset({4, 8})
    group_sizes: frozenset[int | None] = frozenset({None, 32, 64, 128})
    asymmetric_weights: bool = True
    activation_modes: frozenset[ActivationMode] = frozenset(ActivationMode)
    embedding_bits: frozenset[int] = frozenset({4, 8})


@dataclass(frozen=True)
class ActivationQParams:
    scale: float
    zero_point: int | None
