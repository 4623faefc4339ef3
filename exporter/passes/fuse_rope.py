"""fuse_rope: rotary position embedding (half-split, as Llama) as one op, ``slmpack::rope``.

pattern   add(mul(x, cos), mul(cat([neg(slice(x, d, h, end)), slice(x, d, 0, h)], -1), sin))
          (either operand order of the add and of both muls)
check     both slices on the last dim of x, at its middle (h = D/2), the second one reaching D;
          cat on the last dim
rewrite   slmpack::rope(x, cos, sin) (decomposition = the reference's math)
"""
from __future__ import annotations

from torch.fx import Node

from slmpack.exporter.passes import ops
from slmpack.exporter.passes.base import FxFusion, aten, is_call, last_dim, unwrap, val
from slmpack.exporter.passes.graph_utils import emit


def _rotate_half(node) -> dict | None:
    """cat([neg(x[..., h:]), x[..., :h]], -1) -> captures."""
    node = unwrap(node)
    if not is_call(node, aten.cat.default) or len(node.args[0]) != 2:
        return None
    neg, lo = (unwrap(a) for a in node.args[0])
    if not is_call(neg, aten.neg.default):
        return None
    hi = unwrap(neg.args[0])
    if not (is_call(hi, aten.slice.Tensor) and is_call(lo, aten.slice.Tensor)):
        return None
    if unwrap(hi.args[0]) is not unwrap(lo.args[0]):
        return None
    dim = node.args[1] if len(node.args) > 1 else 0
    return {"x": unwrap(hi.args[0]), "hi": hi, "lo": lo, "cat_dim": dim}


def _slice(node) -> tuple[int, int, int | None, int]:
    """(dim, start, end, step) of aten.slice.Tensor(x, dim=0, start=None, end=None, step=1)."""
    args = list(node.args[1:]) + [None] * (5 - len(node.args))
    dim, start, end, step = (args + [None] * 4)[:4]
    return 0 if dim is None else dim, 0 if start is None else start, end, 1 if step is None else step


class FuseRope(FxFusion):
    name = "fuse_rope"

    def pattern(self, ep, node: Node) -> dict | None:
        if not is_call(node, aten.add.Tensor) or len(node.args) != 2:
            return None
        for a, b in (node.args, node.args[::-1]):
            a, b = unwrap(a), unwrap(b)
            if not (is_call(a, aten.mul.Tensor) and is_call(b, aten.mul.Tensor)):
                continue
            for rot, sin in (b.args, b.args[::-1]):
                r = _rotate_half(rot)
                if r is None:
                    continue
                for x, cos in (a.args, a.args[::-1]):
                    if unwrap(x) is r["x"]:
                        return {**r, "anchor": node, "cos": cos, "sin": sin}
        return None

    def check(self, ep, m: dict) -> str | None:
        x = val(m["x"])
        rank, d = x.dim(), x.shape[-1]
        if not last_dim(m["cat_dim"], rank):
            return f"rotated halves concatenated on dim {m['cat_dim']}, not the last"
        (d_hi, s_hi, e_hi, st_hi), (d_lo, s_lo, e_lo, st_lo) = _slice(m["hi"]), _slice(m["lo"])
        if not (last_dim(d_hi, rank) and last_dim(d_lo, rank)) or st_hi != 1 or st_lo != 1:
            return "slices not unit-step on the last dim (interleaved or other layout)"
        if not isinstance(d, int) or d % 2:
            return f"head dim {d} not a known even number"
        if s_lo != 0 or e_lo != d // 2 or s_hi != d // 2 or e_hi is None or e_hi < d:
            return f"halves [{s_hi}:{e_hi}] / [{s_lo}:{e_lo}] do not split {d} in the middle (partial rotary?)"
        return None

    def rewrite(self, ep, m: dict) -> None:
        graph = ep.graph_module.graph
        anchor = m["anchor"]
        with graph.inserting_before(anchor):
            fused = emit(graph, ops.ROPE, (m["x"], m["cos"], m["sin"]), like=anchor)
        anchor.replace_all_uses_with(fused)
        graph.erase_node(anchor)


fuse_rope = FuseRope()
