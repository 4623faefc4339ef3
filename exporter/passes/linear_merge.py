"""Merging sibling linears (same input, weights side by side) into one linear + split. Shared by
``fuse_qkv`` and ``fuse_gate_up``; holds no pass itself."""
from __future__ import annotations

import operator

import torch
from torch.fx import Node

from slmpack.exporter.passes.base import aten, data_users, is_call, param_target, param_tensor
from slmpack.exporter.passes.graph_utils import add_parameter, emit


def linear_parts(ep, node: Node) -> tuple[str, str | None] | None:
    """(weight target, bias target or None) of ``aten.linear(x, W[, b])`` with parameter weights."""
    if not is_call(node, aten.linear.default):
        return None
    w = param_target(ep, node.args[1])
    if w is None:
        return None
    b = node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
    return w, (param_target(ep, b) if b is not None else None)


def find_siblings(ep, anchor: Node, suffixes: tuple[str, ...]) -> dict | None:
    """Match: ``anchor`` is the linear whose weight ends with ``suffixes[0]``; its siblings (other
    linears of the same input) are looked up by the remaining suffixes under the same prefix."""
    parts = linear_parts(ep, anchor)
    if parts is None or not parts[0].endswith(suffixes[0] + ".weight"):
        return None
    prefix = parts[0][: -len(suffixes[0] + ".weight")]
    x = anchor.args[0]
    by_target = {}
    for u in data_users(x) if isinstance(x, Node) else []:
        p = linear_parts(ep, u)
        if p is not None and u.args[0] is x:
            by_target[p[0]] = u
    found = [by_target.get(f"{prefix}{s}.weight") for s in suffixes]
    return {"x": x, "prefix": prefix, "linears": found, "suffixes": suffixes}


def check_siblings(ep, m: dict) -> str | None:
    missing = [s for s, n in zip(m["suffixes"], m["linears"]) if n is None]
    if missing:
        return f"no sibling linear(s) {', '.join(missing)} on the same input"
    weights = [param_tensor(ep, n.args[1]) for n in m["linears"]]
    if any(not w.is_floating_point() for w in weights):
        return "weights are not floating point (quantized?)"
    if len({w.dtype for w in weights}) != 1:
        return "weights have different dtypes"
    if len({w.shape[1] for w in weights}) != 1:
        return "weights have different input sizes"
    biases = [linear_parts(ep, n)[1] for n in m["linears"]]
    has_bias = [len(n.args) > 2 and n.args[2] is not None for n in m["linears"]]
    if any(has_bias) and not all(has_bias):
        return "only some siblings have a bias"
    if any(has_bias) and any(b is None for b in biases):
        return "a bias is not a parameter"
    return None


def merge(ep, m: dict, fused_name: str) -> None:
    """linear(x, Wa), linear(x, Wb), ... -> split(linear(x, cat[Wa, Wb, ...]))."""
    linears: list[Node] = m["linears"]
    graph = ep.graph_module.graph
    weights = [param_tensor(ep, n.args[1]) for n in linears]
    sizes = [int(w.shape[0]) for w in weights]
    w_node = add_parameter(ep, f"{m['prefix']}{fused_name}.weight", torch.cat(weights, 0))
    args = [m["x"], w_node]
    if len(linears[0].args) > 2 and linears[0].args[2] is not None:
        bias = torch.cat([param_tensor(ep, n.args[2]) for n in linears], 0)
        args.append(add_parameter(ep, f"{m['prefix']}{fused_name}.bias", bias))
    first = min(linears, key=lambda n: list(graph.nodes).index(n))
    with graph.inserting_before(first):
        fused = emit(graph, aten.linear.default, tuple(args), like=first)
        split = emit(graph, aten.split_with_sizes.default, (fused, sizes, -1), like=first)
        for i, old in enumerate(linears):
            piece = emit(graph, operator.getitem, (split, i), like=old)
            old.replace_all_uses_with(piece)
    for old in linears:
        graph.erase_node(old)
