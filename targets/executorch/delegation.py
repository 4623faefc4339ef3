"""Delegation report: which edge ops XNNPACK took, and the share of FLOPs it runs.

FLOPs are estimated per op from the edge graph's tensor shapes (``meta["val"]``) at two concrete
points, since the sequence length is symbolic:

* ``prefill``: S = max_prompt tokens at positions 0..S-1 (an empty cache);
* ``decode``:  S = 1 token at the last cache position (the longest attention);
* ``generation``: the whole context: that prefill, then one decode step at every position
  max_prompt .. max_context-1 (decode cost is linear in the position, so two evaluations suffice).

Matmul-like ops count 2*M*N*K; ``llama::custom_sdpa`` counts 4*H*D per (query, attended key),
with the causal key counts of its ``start_pos`` path; elementwise ops count one per output
element (softmax five); data movement (views, copies, gathers, cache writes) counts zero.
"""
from __future__ import annotations

import math
from collections import Counter

import torch

# ops whose cost is data movement only
_MOVE = ("quantize", "dequantize", "choose_qparams",  # q/dq patterns: fused into XNNPACK's quantized GEMM
         "view", "reshape", "permute", "transpose", "expand", "slice", "select", "unsqueeze", "squeeze",
         "clone", "cat", "index", "embedding", "copy", "update_cache", "scalar_tensor", "arange", "alias",
         "sym_size", "_local_scalar_dense", "assert", "full", "zeros", "detach", "dim_order", "auto_functionalized")
_MATMUL = ("linear", "addmm", "mm", "bmm", "matmul")


def _name(op) -> str:
    """The operator name of an FX node's callable (``aten.mm.default`` -> ``mm.default``)."""
    name = getattr(op, "__name__", None) or str(op)
    return name.split("::")[-1]


class _Shapes:
    """Concrete sizes for symbolic dims: every backed symbol is the sequence length."""

    def __init__(self, seq: int):
        self.seq = seq

    def size(self, d) -> int:
        if isinstance(d, torch.SymInt):
            expr = d.node.expr
            return int(expr.subs({s: self.seq for s in expr.free_symbols}))
        return int(d)

    def shape(self, node) -> tuple[int, ...] | None:
        val = node.meta.get("val") if hasattr(node, "meta") else None
        if isinstance(val, (tuple, list)):
            val = val[0] if val else None
        if not isinstance(val, torch.Tensor):
            return None
        return tuple(self.size(d) for d in val.shape)


_NAMESPACES = ("aten", "llama", "quantized_decomposed", "torchao", "dim_order_ops", "edge")


def _base(name: str) -> str:
    """``aten.linear.default`` -> ``linear``; ``llama.custom_sdpa.default`` -> ``custom_sdpa``."""
    parts = name.split(".")
    if len(parts) > 1 and parts[0] in _NAMESPACES:
        parts = parts[1:]
    return parts[0]


def op_flops(node, shapes: _Shapes, start_pos: int) -> int:
    base = _base(_name(node.target))
    out = shapes.shape(node)
    args = [a for a in node.args if isinstance(a, torch.fx.Node)]
    if "custom_sdpa" in base:
        q = shapes.shape(args[0])                      # [B, S, H, D]
        b, s, h, d = q
        keys = sum(start_pos + i + 1 for i in range(s))  # causal path attends 0..start_pos+i
        return 4 * b * h * d * keys
    if base in _MATMUL:
        a = shapes.shape(args[0]) if args else None
        if out is None or a is None:
            return 0
        return 2 * math.prod(out) * a[-1]
    if any(m in base for m in _MOVE) or out is None:
        return 0
    if "softmax" in base:
        return 5 * math.prod(out)
    if base.startswith("mean") or base.startswith("sum"):
        a = shapes.shape(args[0])
        return math.prod(a) if a else 0
    return math.prod(out)


def _is_symbolic(node) -> bool:
    """Python-level size arithmetic and runtime asserts on sizes (``operator.le``, ``_assert_scalar``)."""
    return getattr(node.target, "__module__", "") == "_operator" or "assert" in _name(node.target)


def _walk(graph_module, shapes, start_pos, delegated: bool, acc: dict) -> None:
    for node in graph_module.graph.nodes:
        if node.op != "call_function":
            continue
        name = _name(node.target)
        if name == "getitem" or _is_symbolic(node):
            continue
        if name == "executorch_call_delegate":
            lowered = getattr(graph_module, node.args[0].target)
            acc["partitions"] += 1
            _walk(lowered.original_module.graph_module, shapes, start_pos, True, acc)
            continue
        key = "delegated" if delegated else "portable"
        acc[key + "_ops"][name] += 1
        acc[key + "_flops"] += op_flops(node, shapes, start_pos)


def _point(gm, seq: int, start: int) -> dict:
    acc = {"partitions": 0, "delegated_ops": Counter(), "portable_ops": Counter(),
           "delegated_flops": 0, "portable_flops": 0}
    _walk(gm, _Shapes(seq), start, False, acc)
    return acc


def _share(delegated: int, total: int) -> float:
    return round(delegated / total, 6) if total else 1.0


def report(edge_program, max_prompt: int, max_context: int) -> dict:
    """Op counts and FLOP shares of the lowered ``forward`` method (an edge ExportedProgram)."""
    gm = edge_program.graph_module
    out: dict = {}
    accs = {}
    for point, seq, start in (("prefill", max_prompt, 0), ("decode", 1, max_context - 1)):
        acc = accs[point] = _point(gm, seq, start)
        total = acc["delegated_flops"] + acc["portable_flops"]
        out[point] = {"seq_len": seq, "start_pos": start, "flops": total,
                      "delegated_flops": acc["delegated_flops"],
                      "delegated_flop_share": _share(acc["delegated_flops"], total)}
    acc = accs["prefill"]
    out["xnnpack_partitions"] = acc["partitions"]
    out["delegated_op_count"] = sum(acc["delegated_ops"].values())
    out["portable_op_count"] = sum(acc["portable_ops"].values())
    out["delegated_ops"] = dict(sorted(acc["delegated_ops"].items()))
    out["portable_ops"] = dict(sorted(acc["portable_ops"].items()))
    out["portable_flops_by_op"] = _flops_by_op(gm, _Shapes(max_prompt), 0)
    d0, d1 = _point(gm, 1, 0), _point(gm, 1, 1)     # decode cost is affine in the position
    gen = {k: acc[k] + sum(d0[k] + (d1[k] - d0[k]) * p for p in range(max_prompt, max_context))
           for k in ("delegated_flops", "portable_flops")}
    total = gen["delegated_flops"] + gen["portable_flops"]
    out["generation"] = {"tokens": max_context, "flops": total, "delegated_flops": gen["delegated_flops"],
                         "delegated_flop_share": _share(gen["delegated_flops"], total)}
    out["backend"] = "XnnpackBackend"
    return out


def _flops_by_op(gm, shapes, start_pos) -> dict:
    by: Counter = Counter()
    for node in gm.graph.nodes:
        if node.op == "call_function" and not _is_symbolic(node) \
                and _name(node.target) not in ("getitem", "executorch_call_delegate"):
            f = op_flops(node, shapes, start_pos)
            if f:
                by[_name(node.target)] += f
    return dict(sorted(by.items()))


def summary_line(rep: dict) -> str:
    return (f"XNNPACK: {rep['xnnpack_partitions']} partitions, {rep['delegated_op_count']} ops delegated, "
            f"{rep['portable_op_count']} not; FLOPs delegated: prefill "
            f"{100 * rep['prefill']['delegated_flop_share']:.1f}%, decode at the last position "
            f"{100 * rep['decode']['delegated_flop_share']:.1f}%, whole context "
            f"{100 * rep['generation']['delegated_flop_share']:.1f}% (the rest: "
            f"{', '.join(sorted(rep['portable_flops_by_op'], key=rep['portable_flops_by_op'].get, reverse=True)[:2]) or '-'})")
