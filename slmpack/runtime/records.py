"""Typed, frozen records shared by the exporter, the targets, the ladder and the device (stdlib only).

``TargetName``, ``Tolerance``, the shared fusion/pass report (``PassResult``), the read-back result
(``Readback``) and the validation ladder's result (``LadderResult`` of ``StepResult``). Each has
``to_json()`` / ``from_json()``; JSON keeps the layout the manifest has always had.
"""
from __future__ import annotations

import enum
import math
import types
from dataclasses import dataclass, field
from typing import Any, Mapping

from .errors import BadInputError, ErrorCode

JsonMap = Mapping[str, Any]
EMPTY: JsonMap = types.MappingProxyType({})


class TargetName(str, enum.Enum):
    ONNX = "onnx"
    EXECUTORCH = "executorch"
    TFLITE = "tflite"
    COREML = "coreml"


def freeze(x: Any) -> Any:
    """JSON value -> immutable (mappings become read-only, lists tuples)."""
    if isinstance(x, Mapping):
        return types.MappingProxyType({str(k): freeze(v) for k, v in x.items()})
    if isinstance(x, (list, tuple)):
        return tuple(freeze(v) for v in x)
    return x


def thaw(x: Any) -> Any:
    """Immutable/record value -> plain JSON (dict/list/str/number/bool/None)."""
    if hasattr(x, "to_json") and not isinstance(x, type):
        return x.to_json()
    if isinstance(x, enum.Enum):
        return x.value
    if isinstance(x, Mapping):
        return {str(k): thaw(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [thaw(v) for v in x]
    return x


def invalid(field_name: str, message: str) -> BadInputError:
    return BadInputError(f"manifest field {field_name}: {message}", ErrorCode.E_MANIFEST_INVALID,
                         details={"field": field_name})


def need(d: Any, key: str, kind, where: str, *, optional: bool = False, default: Any = None) -> Any:
    """``d[key]`` checked against ``kind`` (a type or tuple of types); names ``where.key`` when wrong."""
    name = f"{where}.{key}" if where else key
    if not isinstance(d, Mapping):
        raise invalid(where or "<root>", f"expected an object, got {type(d).__name__}")
    v = d.get(key)
    if v is None:
        if optional:
            return default
        raise invalid(name, "missing")
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(v, bool) and bool not in kinds:
        raise invalid(name, f"expected {'/'.join(k.__name__ for k in kinds)}, got bool")
    if float in kinds and isinstance(v, int) and not isinstance(v, bool):
        v = float(v)
    if not isinstance(v, kinds):
        raise invalid(name, f"expected {'/'.join(k.__name__ for k in kinds)}, got {type(v).__name__}")
    return v


def rest(d: Mapping, known) -> JsonMap:
    return freeze({k: v for k, v in d.items() if k not in known})


@dataclass(frozen=True)
class Tolerance:
    """Declared numerical tolerance of a target vs eager PyTorch, for logits."""

    atol: float
    rtol: float = 0.0
    min_top1: float = 1.0        # ladder (c): fp32 exports must agree on every held-out token
    greedy_exact: bool = True    # ladder (d)

    def __post_init__(self):
        for name in ("atol", "rtol", "min_top1"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise invalid(f"tolerance.{name}", f"must be a finite number >= 0, got {v!r}")
        if self.min_top1 > 1:
            raise invalid("tolerance.min_top1", f"must be <= 1, got {self.min_top1!r}")

    def to_json(self) -> dict:
        return {"atol": self.atol, "rtol": self.rtol, "min_top1": self.min_top1, "greedy_exact": self.greedy_exact}

    @classmethod
    def from_json(cls, d: Any, where: str = "tolerance") -> "Tolerance":
        return cls(atol=need(d, "atol", float, where), rtol=need(d, "rtol", float, where, optional=True, default=0.0),
                   min_top1=need(d, "min_top1", float, where, optional=True, default=1.0),
                   greedy_exact=need(d, "greedy_exact", bool, where, optional=True, default=True))


@dataclass(frozen=True)
class Decline:
    """One place a pass looked at and left alone, with the reason (pattern / check / rewrite)."""

    where: str
    reason: str

    def to_json(self) -> dict:
        return {"where": self.where, "reason": self.reason}

    @classmethod
    def from_json(cls, d: Any, where: str = "decline") -> "Decline":
        return cls(need(d, "where", str, where), need(d, "reason", str, where))


@dataclass(frozen=True)
class PassResult:
    """What one fusion/rewrite pass did: the shared report of ONNX rules, Core ML passes,
    ExecuTorch source transforms and LiteRT composites."""

    name: str
    applied: int
    declined: tuple[Decline, ...] = ()

    def __post_init__(self):
        if isinstance(self.applied, bool) or not isinstance(self.applied, int) or self.applied < 0:
            raise invalid(f"passes.{self.name}.applied", f"must be an int >= 0, got {self.applied!r}")

    def to_json(self) -> dict:
        return {"applied": self.applied, "declined": [d.to_json() for d in self.declined]}

    @classmethod
    def from_json(cls, name: str, d: Any, where: str = "passes") -> "PassResult":
        w = f"{where}.{name}"
        return cls(name, need(d, "applied", int, w),
                   tuple(Decline.from_json(x, f"{w}.declined") for x in need(d, "declined", list, w)))


def passes_to_json(passes: tuple[PassResult, ...]) -> dict:
    return {p.name: p.to_json() for p in sorted(passes, key=lambda p: p.name)}


def passes_from_json(d: Any, where: str) -> tuple[PassResult, ...]:
    if not isinstance(d, Mapping):
        raise invalid(where, "expected an object {pass name: result}")
    return tuple(PassResult.from_json(k, v, where) for k, v in sorted(d.items()))


@dataclass(frozen=True)
class Readback:
    """A target's decode of its written artifact compared with the QuantPlan."""

    passed: bool | None
    problems: tuple[str, ...] = ()
    bit_identical: bool | None = None
    max_abs_dequant_deviation: float | None = None
    details: JsonMap = field(default_factory=lambda: EMPTY)      # per-tensor results, notes

    KNOWN = ("passed", "problems", "bit_identical", "max_abs_dequant_deviation")

    def to_json(self) -> dict:
        return {**thaw(self.details), "passed": self.passed, "problems": list(self.problems),
                "bit_identical": self.bit_identical, "max_abs_dequant_deviation": self.max_abs_dequant_deviation}

    @classmethod
    def from_json(cls, d: Any, where: str = "readback") -> "Readback":
        return cls(passed=need(d, "passed", bool, where, optional=True),
                   problems=tuple(need(d, "problems", list, where, optional=True, default=[])),
                   bit_identical=need(d, "bit_identical", bool, where, optional=True),
                   max_abs_dequant_deviation=need(d, "max_abs_dequant_deviation", float, where, optional=True),
                   details=rest(d, cls.KNOWN))


@dataclass(frozen=True)
class StepResult:
    """One ladder step: ``passed`` (None: reported, never failed on) and its measurements."""

    passed: bool | None
    details: JsonMap = field(default_factory=lambda: EMPTY)

    def to_json(self) -> dict:
        out = thaw(self.details)
        if self.passed is not None:
            out["passed"] = self.passed
        return out

    @classmethod
    def from_json(cls, d: Any, where: str) -> "StepResult":
        return cls(need(d, "passed", bool, where, optional=True), rest(d, ("passed",)))


LADDER_STEPS = ("structural", "vectors", "heldout", "greedy")


@dataclass(frozen=True)
class LadderResult:
    """The validation ladder's result: the four required steps plus reported-only steps."""

    passed: bool
    steps: Mapping[str, StepResult]
    mode: str | None = None       # "quantized" for the plan ladder

    def __post_init__(self):
        missing = [s for s in LADDER_STEPS if s not in self.steps]
        if missing:
            raise invalid("validation", f"missing steps {missing}")
        object.__setattr__(self, "steps", types.MappingProxyType(dict(self.steps)))

    def __getitem__(self, step: str) -> StepResult:
        return self.steps[step]

    def failed(self) -> list[str]:
        return [s for s in LADDER_STEPS if self.steps[s].passed is False]

    def to_json(self) -> dict:
        out: dict = {k: v.to_json() for k, v in self.steps.items()}
        out["passed"] = self.passed
        if self.mode is not None:
            out["mode"] = self.mode
        return out

    @classmethod
    def from_json(cls, d: Any, where: str = "validation") -> "LadderResult":
        passed = need(d, "passed", bool, where)
        mode = need(d, "mode", str, where, optional=True)
        steps = {k: StepResult.from_json(v, f"{where}.{k}") for k, v in d.items() if k not in ("passed", "mode")}
        for s in LADDER_STEPS:
            if s not in steps:
                raise invalid(f"{where}.{s}", "missing")
        return cls(passed, steps, mode)


__all__ = ["TargetName", "Tolerance", "Decline", "PassResult", "Readback", "StepResult", "LadderResult",
           "LADDER_STEPS", "freeze", "thaw", "passes_to_json", "passes_from_json"]
