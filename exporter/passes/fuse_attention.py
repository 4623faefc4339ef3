"""fuse_attention: KV-cache update + grouped-query attention as one op.

pattern   anchored at softmax:
            k_all = cat([past_k, k], 2) | index_copy(cache_k, 2, pos, k) | index_copy_(buf_k, 2, pos, k)
            k_rep = reshape(expand(unsqueeze(k_all, 2))) (GQA head sharing) or k_all
            probs = softmax(matmul(q, transpose(k_rep, 2, 3)) * scale + mask)
            out   = matmul(probs, v_rep), v_all / v_rep built like k's
check     one cache-update kind for k and v, on the sequence dim (2); a constant scale; softmax
          over the last dim; the heads of q a multiple of those of k/v; every intermediate
          (scores, probs, repeated k/v) used only inside the block
rewrite   cat / index_copy  -> (out, k_all, v_all) = slmpack::attention(q, k, v, k_cache, v_cache,
                                                         mask, pos | None, scale)
          index_copy_       -> out = slmpack::attention_inplace(..., pos, scale) (caches mutated)
"""
from __future__ import annotations

import operator

from torch.fx import Node

from slmpack.exporter.passes import ops
from slmpack.exporter.passes.base import FxFusion, aten, data_users, is_call, last_dim, single_user, unwrap, val
from slmpack.exporter.passes.graph_utils import cleanup_dead, emit

_UPDATES = {aten.cat.default: "concat", aten.index_copy.default: "index", aten.index_copy_.default: "inplace"}


def _repeated(node) -> tuple[Node, list[Node]]:
    """Undo the GQA head repetition: reshape(expand(unsqueeze(t, 2))) -> (t, chain)."""
    r = unwrap(node)
    if is_call(r, aten.reshape.default, aten.view.default, aten._unsafe_view.default):
        e = unwrap(r.args[0])
        if is_call(e, aten.expand.default):
            u = unwrap(e.args[0])
            if is_call(u, aten.unsqueeze.default) and u.args[1] == 2:
                return unwrap(u.args[0]), [r, e, u]
    return r, []


def _update(node: Node) -> dict | None:
    """The cache update producing ``node``: kind, cache, new values, position."""
    kind = _UPDATES.get(node.target) if node.op == "call_function" else None
    if kind == "concat":
        parts = node.args[0]
        dim = node.args[1] if len(node.args) > 1 else 0
        if len(parts) != 2:
            return None
        return {"kind": kind, "cache": parts[0], "new": parts[1], "pos": None, "dim": dim, "node": node}
    if kind in ("index", "inplace"):
        cache, dim, pos, new = node.args[:4]
        return {"kind": kind, "cache": cache, "new": new, "pos": pos, "dim": dim, "node": node}
    return None


def _scores(node) -> dict | None:
    """mask + matmul(q, transpose(k_rep)) * scale -> captures."""
    add = unwrap(node)
    if not is_call(add, aten.add.Tensor):
        return None
    for scaled, mask in (add.args, add.args[::-1]):
        scaled = unwrap(scaled)
        if not is_call(scaled, aten.mul.Tensor, aten.div.Tensor):
            continue
        mm, scale = scaled.args
        mm = unwrap(mm)
        if not is_call(mm, aten.matmul.default):
            continue
        kt = unwrap(mm.args[1])
        if not is_call(kt, aten.transpose.int):
            continue
        return {"add": add, "scaled": scaled, "mm_qk": mm, "q": mm.args[0], "kt": kt, "mask": mask,
                "scale": scale}
    return None


class FuseAttention(FxFusion):
    name = "fuse_attention"

    def pattern(self, ep, node: Node) -> dict | None:
        if not is_call(node, aten.softmax.int, aten._softmax.default):
            return None
        s = _scores(node.args[0])
        if s is None:
            return None
        pv = single_user(node)
        if not is_call(pv, aten.matmul.default) or unwrap(pv.args[0]) is not node:
            return None
        k_all, k_chain = _repeated(s["kt"].args[0])
        v_all, v_chain = _repeated(pv.args[1])
        return {**s, "softmax": node, "mm_pv": pv, "k_all": k_all, "v_all": v_all,
                "k_chain": k_chain, "v_chain": v_chain, "k_upd": _update(k_all), "v_upd": _update(v_all)}

    def check(self, ep, m: dict) -> str | None:
        ku, vu = m["k_upd"], m["v_upd"]
        if ku is None or vu is None:
            return "keys/values do not come from a recognised cache update (cat / index_copy)"
        if ku["kind"] != vu["kind"]:
            return f"keys updated by {ku['kind']}, values by {vu['kind']}"
        if ku["dim"] != 2 or vu["dim"] != 2:
            return f"cache updated on dims {ku['dim']}/{vu['dim']}, not the sequence dim 2"
        if ku["kind"] != "concat" and ku["pos"] is not vu["pos"]:
            return "keys and values written at different positions"
        if not isinstance(m["scale"], (int, float)):
            return "attention scale is not a constant"
        if m["scale"] == 0:
            return "attention scale is zero"
        kt = m["kt"]
        if sorted(d % 4 for d in kt.args[1:3]) != [2, 3]:
            return f"keys transposed on dims {kt.args[1:3]}, not the last two"
        sm = m["softmax"]
        if not last_dim(sm.args[1], val(sm).dim()):
            return "softmax not over the last dim"
        if sm.target is aten._softmax.default and sm.args[2]:
            return "softmax with half_to_float"
        q, k = val(m["q"]), val(ku["new"])
        if q.dim() != 4 or k.dim() != 4 or q.shape[1] % k.shape[1]:
            return f"query heads {q.shape[1]} not a multiple of key/value heads {k.shape[1]}"
        groups = q.shape[1] // k.shape[1]
        if (groups > 1) != bool(m["k_chain"]) or bool(m["k_chain"]) != bool(m["v_chain"]):
            return "head repetition does not match the query/key head counts"
        inner = [m["add"], m["scaled"], m["mm_qk"], kt, sm, *m["k_chain"], *m["v_chain"]]
        for n in inner:
            if len(data_users(n)) != 1:
                return f"intermediate {n.name} is used outside the attention block"
        if ku["kind"] == "inplace":
            for upd, chain, tail in ((ku, m["k_chain"], kt), (vu, m["v_chain"], m["mm_pv"])):
                first = chain[-1] if chain else tail
                if [u for u in data_users(upd["node"]) if u is not first]:
                    return "the in-place cache update's result is used outside the attention block"
        return None

    def rewrite(self, ep, m: dict) -> None:
        graph = ep.graph_module.graph
        ku, vu, pv = m["k_upd"], m["v_upd"], m["mm_pv"]
        scale = float(m["scale"]) if m["scaled"].target is aten.mul.Tensor else 1.0 / m["scale"]
        args = (m["q"], ku["new"], vu["new"], ku["cache"], vu["cache"], m["mask"], ku["pos"], scale)
        if ku["kind"] == "inplace":
            with graph.inserting_before(pv):
                out = emit(graph, ops.ATTENTION_INPLACE, args, like=pv)
            pv.replace_all_uses_with(out)
            graph.erase_node(pv)
            # the op now owns the cache writes: the standalone in-place updates must go, and dead-code
            # elimination keeps them (side effects), so drop the block's dead nodes, then them
            cleanup_dead(graph)
            for upd in (ku["node"], vu["node"]):
                if not upd.users:
                    graph.erase_node(upd)
            return
        with graph.inserting_before(pv):
            res = emit(graph, ops.ATTENTION, args, like=pv)
            out = emit(graph, operator.getitem, (res, 0), like=pv)
        pv.replace_all_uses_with(out)
        graph.erase_node(pv)
        cleanup_dead(graph)  # the old scores/probs chain, so only later users of the caches remain
        with graph.inserting_after(out):
            k_all = emit(graph, operator.getitem, (res, 1), like=ku["node"])
            v_all = emit(graph, operator.getitem, (res, 2), like=vu["node"])
        ku["node"].replace_all_uses_with(k_all)  # present.N.key/value now come from the op
        vu["node"].replace_all_uses_with(v_all)


fuse_attention = FuseAttention()
