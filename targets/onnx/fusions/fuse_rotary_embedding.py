"""Half-split rotary embedding -> com.microsoft RotaryEmbedding (cos/sin caches + position_ids).

pattern   Add(Mul(x, cos), Mul(Concat(Neg(Slice(x, D/2, end)), Slice(x, 0, D/2), axis=-1), sin))
check     x is [batch, heads, sequence, head_dim] with known heads and head_dim; the slices split
          the last axis in the middle; cos and sin are rows of constant tables gathered by the
          graph input position_ids (Unsqueeze(GatherND(table, Unsqueeze(position_ids[0]))))
          whose two halves are equal (non-interleaved rope, as our reference builds it)
rewrite   RotaryEmbedding(x, position_ids, cos_table[:, :D/2], sin_table[:, :D/2], interleaved=0);
          the half tables become initializers shared by every layer
"""
from __future__ import annotations

import numpy as np
import onnx_ir as ir

from slmpack.targets.onnx.fusions._base import MS_DOMAIN, OrtFusion, const, dims, graph_input, ints, producer

POSITION_IDS = "position_ids"


def table_rows(value: ir.Value) -> tuple[ir.Value, ir.Value] | None:
    """cos = Unsqueeze(GatherND(table, Unsqueeze(Gather(position_ids, 0)))) -> (table, position_ids)."""
    unsq = producer(value, "Unsqueeze")
    gnd = producer(unsq.inputs[0] if unsq else None, "GatherND")
    if gnd is None or const(gnd.inputs[0]) is None:
        return None
    idx = producer(gnd.inputs[1], "Unsqueeze")
    sel = producer(idx.inputs[0] if idx else None, "Gather")
    if sel is None or not graph_input(sel.inputs[0], POSITION_IDS) or ints(sel.inputs[1]) != [0]:
        return None
    return gnd.inputs[0], sel.inputs[0]


class FuseRotaryEmbedding(OrtFusion):
    def setup(self):
        self._halves: dict[str, ir.Value] = {}

    def pattern(self, op, x, cos, sin, s1, e1, a1, t1, s2, e2, a2, t2):
        hi = op.Slice(x, s1, e1, a1, t1)
        lo = op.Slice(x, s2, e2, a2, t2)
        rotated = op.Concat(op.Neg(hi), lo, axis=-1)
        return op.Add(op.Mul(x, cos), op.Mul(rotated, sin))

    def check(self, context, x, cos, sin, s1, e1, a1, t1, s2, e2, a2, t2, **_):
        shape = dims(x)
        if shape is None or len(shape) != 4 or not all(isinstance(d, int) for d in (shape[1], shape[3])):
            return self.decline(x, f"input shape {shape} is not [batch, heads(int), sequence, head_dim(int)]")
        d = shape[3]
        if not (ints(a1) in ([3], [-1]) and ints(a2) in ([3], [-1]) and ints(t1) == [1] and ints(t2) == [1]):
            return self.decline(x, "slices are not unit-step slices of the last axis")
        if not (ints(s1) == [d // 2] and (ints(e1) or [0])[0] >= d and ints(s2) == [0] and ints(e2) == [d // 2]):
            return self.decline(x, "the slices do not split head_dim in the middle (partial rotary?)")
        rows = [table_rows(cos), table_rows(sin)]
        if None in rows:
            return self.decline(x, "cos/sin are not rows of constant tables gathered by position_ids")
        for table, _pos in rows:
            t = const(table)
            if t.ndim != 2 or t.shape[1] != d or not np.array_equal(t[:, : d // 2], t[:, d // 2:]):
                return self.decline(x, "cos/sin table halves differ (interleaved rope?)")
        return True

    def _half(self, op, table: ir.Value, role: str) -> ir.Value:
        if table.name not in self._halves:
            t = const(table)
            half = np.ascontiguousarray(t[:, : t.shape[1] // 2])
            name = f"rotary.{role}_cache" + (f".{len(self._halves)}" if len(self._halves) > 1 else "")
            self._halves[table.name] = op.initializer(ir.tensor(half, name=name), name=name)
        return self._halves[table.name]

    def rewrite(self, op, x, cos, sin, **_):
        (cos_t, pos), (sin_t, _) = table_rows(cos), table_rows(sin)
        return op.RotaryEmbedding(x, pos, self._half(op, cos_t, "cos"), self._half(op, sin_t, "sin"), interleaved=0,
                                  _domain=MS_DOMAIN)


rule = FuseRotaryEmbedding
