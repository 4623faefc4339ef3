"""Editing an ExportedProgram in place: new nodes with shape metadata, new parameters with their
graph-signature entries, and cleanup of what a rewrite left unused."""
from __future__ import annotations

import re

import torch
from torch._guards import detect_fake_mode
from torch.export.graph_signature import ExportGraphSignature, InputKind, InputSpec, TensorArgument
from torch.fx import Graph, Node
from torch.utils._pytree import tree_map

from slmpack.exporter.passes.base import _ASSERT, val


def fake_mode_of(graph: Graph):
    return detect_fake_mode([n.meta.get("val") for n in graph.nodes if n.op == "placeholder"])


def emit(graph: Graph, target, args: tuple, kwargs: dict | None = None, like: Node | None = None) -> Node:
    """Insert ``target(*args)`` at the graph's insertion point, with ``meta['val']`` computed on
    FakeTensors (what exporters read for dtypes and shapes)."""
    kwargs = kwargs or {}
    node = graph.call_function(target, args, kwargs)
    mode = fake_mode_of(graph)
    fargs, fkwargs = tree_map(lambda a: val(a) if isinstance(a, Node) else a, (args, kwargs))
    if mode is not None:
        with mode:
            node.meta["val"] = target(*fargs, **fkwargs)
    else:
        node.meta["val"] = target(*fargs, **fkwargs)
    if like is not None:
        from slmpack.exporter.passes.base import copy_meta
        copy_meta(node, like)
    return node


def add_parameter(ep, target: str, tensor: torch.Tensor) -> Node:
    """A new parameter ``target`` (state-dict name): placeholder after the last parameter, its
    InputSpec at the same position, the tensor in ``ep.state_dict``."""
    graph = ep.graph_module.graph
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    params = ep.graph_signature.inputs_to_parameters
    last = max((i for i, n in enumerate(placeholders) if n.name in params), default=-1)
    anchor = placeholders[last] if last >= 0 else None
    name = "p_" + re.sub(r"\W", "_", target)
    if anchor is None:
        with graph.inserting_before(placeholders[0] if placeholders else None):
            node = graph.placeholder(name)
    else:
        with graph.inserting_after(anchor):
            node = graph.placeholder(name)
    mode = fake_mode_of(graph)
    node.meta["val"] = mode.from_tensor(tensor, static_shapes=True) if mode is not None else tensor
    ep.state_dict[target] = torch.nn.Parameter(tensor, requires_grad=False)
    specs = list(ep.graph_signature.input_specs)
    specs.insert(last + 1, InputSpec(InputKind.PARAMETER, TensorArgument(node.name), target))
    ep._graph_signature = ExportGraphSignature(specs, ep.graph_signature.output_specs)
    return node


def _drop_dead_asserts(graph: Graph) -> bool:
    """Metadata assertions keep dead values alive (they count as side effects): drop those whose
    value has no other user."""
    changed = False
    for node in list(graph.nodes):
        if node.target is _ASSERT:
            src = node.args[0]
            if isinstance(src, Node) and all(u.target is _ASSERT for u in src.users):
                graph.erase_node(node)
                changed = True
    return changed


def drop_unused_parameters(ep) -> list[str]:
    """Remove parameter placeholders nobody uses (and their specs / state_dict entries)."""
    graph = ep.graph_module.graph
    params = ep.graph_signature.inputs_to_parameters
    dead = [n for n in graph.nodes if n.op == "placeholder" and n.name in params and not n.users]
    if not dead:
        return []
    names = {n.name for n in dead}
    specs = [s for s in ep.graph_signature.input_specs
             if not (isinstance(s.arg, TensorArgument) and s.arg.name in names)]
    still_used = {s.target for s in specs}
    dropped = []
    for n in dead:
        target = params[n.name]
        graph.erase_node(n)
        if target not in still_used and target in ep.state_dict:
            del ep.state_dict[target]
            dropped.append(target)
    ep._graph_signature = ExportGraphSignature(specs, ep.graph_signature.output_specs)
    return dropped


def cleanup_dead(graph: Graph) -> None:
    """Dead-code elimination that also drops metadata assertions on otherwise dead values."""
    while True:
        graph.eliminate_dead_code()
        if not _drop_dead_asserts(graph):
            break


def cleanup(ep) -> None:
    cleanup_dead(ep.graph_module.graph)
    drop_unused_parameters(ep)
