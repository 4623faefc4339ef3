"""What the ONNX fusions share: the rule base class that records declined matches, helpers over
onnx_ir values, and ``apply`` returning a PassResult (count + reasons, nothing printed)."""
from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import pattern

from slmpack.runtime.records import Decline, PassResult

MS_DOMAIN = "com.microsoft"


class OrtFusion(pattern.RewriteRuleClassBase):
    """A rewrite rule whose ``check`` failures are kept as human-readable reasons."""

    def __init__(self, name: str | None = None):
        super().__init__(name or type(self).__name__)
        self.declined: dict[Decline, None] = {}   # ordered set of (where, why)

    def decline(self, where: ir.Value | None, why: str) -> pattern.MatchResult:
        label = where.name if where is not None and where.name else "?"
        self.declined[Decline(label, why)] = None
        return pattern.MatchResult().fail(why)


def apply(fusion: OrtFusion, model: ir.Model, *, commute: bool = True) -> PassResult:
    rule = pattern.RewriteRule(fusion.pattern, fusion.rewrite, fusion.check, name=fusion.name,
                               graph_pre_visitor=fusion.setup, graph_post_visitor=fusion.cleanup)
    count = pattern.RewriteRuleSet([rule], commute=commute).apply_to_model(model)
    return PassResult(fusion.name, count, tuple(fusion.declined))


# ---- value helpers -----------------------------------------------------------------------

def const(value: ir.Value | None) -> np.ndarray | None:
    """The numpy value of a constant (initializer or Constant node output), else None."""
    if value is None:
        return None
    if value.const_value is not None:
        return value.const_value.numpy()
    node = value.producer()
    if node is not None and node.op_type == "Constant" and node.domain == "":
        attr = node.attributes.get("value")
        if attr is not None:
            return attr.as_tensor().numpy()
    return None


def scalar(value: ir.Value | None) -> float | None:
    arr = const(value)
    if arr is None or arr.size != 1:
        return None
    return float(arr.reshape(()))


def ints(value: ir.Value | None) -> list[int] | None:
    arr = const(value)
    return None if arr is None else [int(v) for v in arr.reshape(-1)]


def is_value(x: float | None, want: float) -> bool:
    if x is None:
        return False
    if math.isinf(want):
        return math.isinf(x) and (x > 0) == (want > 0)
    return x == want


def producer(value: ir.Value | None, *op_types: str, domain: str = "") -> ir.Node | None:
    node = value.producer() if value is not None else None
    if node is None or node.domain != domain or (op_types and node.op_type not in op_types):
        return None
    return node


def through(value: ir.Value | None, *op_types: str) -> ir.Value | None:
    """Walk up through single-input shape/type ops (Unsqueeze, Cast, ...)."""
    while value is not None:
        node = producer(value, *op_types)
        if node is None:
            return value
        value = node.inputs[0]
    return value


def graph_input(value: ir.Value | None, name: str) -> bool:
    return value is not None and value.producer() is None and value.name == name and value.const_value is None


def dims(value: ir.Value) -> list | None:
    return None if value.shape is None else list(value.shape)


def attr_int(node: ir.Node, name: str, default: int) -> int:
    a = node.attributes.get(name)
    return default if a is None else a.as_int()


# ---- the RMSNorm sub-pattern (as the exporter writes aten rsqrt: Sqrt + Reciprocal) ---------

def rms_pattern(op, x, scale, two, axes, eps):
    mean_sq = op.ReduceMean(op.Pow(x, two), axes, _allow_other_attributes=True, _outputs=["mean_sq"])
    inv = op.Reciprocal(op.Sqrt(op.Add(mean_sq, eps)))
    return op.Mul(scale, op.Mul(x, inv))


def check_rms(fusion: OrtFusion, x: ir.Value, scale: ir.Value, two, axes, eps, mean_sq) -> str | None:
    """Why this RMSNorm cannot become an ORT norm, or None."""
    if not is_value(scalar(two), 2.0):
        return "exponent is not 2"
    shape = dims(x)
    if shape is None or len(shape) != 3 or not isinstance(shape[-1], int):
        return f"input shape {shape} is not [batch, sequence, hidden]"
    red = ints(axes)
    if red is None or len(red) != 1 or red[0] not in (-1, len(shape) - 1):
        return f"reduction over axes {red}, not the last"
    if attr_int(mean_sq.producer(), "keepdims", 1) != 1:
        return "reduction without keepdims"
    if scalar(eps) is None:
        return "epsilon is not a constant"
    if const(scale) is None or const(scale).shape != (shape[-1],):
        return "scale is not a constant vector of the hidden size"
    if x.dtype not in (ir.DataType.FLOAT, ir.DataType.FLOAT16):
        return f"dtype {x.dtype} not supported by the ORT CPU kernel"
    return None
