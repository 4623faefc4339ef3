"""Where a QuantPlan's tensors live in an exported ONNX graph: each quantized weight is found by
the sha256 of its dequantized values (a MatMul's constant weight, possibly transposed or fused with
its siblings q|k|v, gate|up; a Gather's table), so the encoder never guesses from node names."""
from __future__ import annotations

import hashlib
import re

import numpy as np
import onnx
from onnx import numpy_helper

_SIBLINGS = (("self_attn", ("q_proj", "k_proj", "v_proj")), ("mlp", ("gate_proj", "up_proj")))


def node_path(module: str) -> str:
    """``model.layers.0.self_attn.q_proj`` -> ``/model/layers.0/self_attn/q_proj``."""
    return "/" + re.sub(r"\.(?!\d)", "/", module)


def _digest(a: np.ndarray) -> tuple:
    a = np.ascontiguousarray(a, dtype=np.float32)
    return a.shape, hashlib.sha256(a.tobytes()).hexdigest()


class Graph:
    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.g = model.graph
        self.inits = {i.name: i for i in self.g.initializer}
        self.producer = {o: n for n in self.g.node for o in n.output}
        self._arrays: dict[str, np.ndarray] = {}
        self.new_inits: list[onnx.TensorProto] = []

    def array(self, name: str) -> np.ndarray | None:
        if name not in self.inits:
            return None
        if name not in self._arrays:
            self._arrays[name] = numpy_helper.to_array(self.inits[name])
        return self._arrays[name]

    def add(self, name: str, value: np.ndarray) -> str:
        value = np.asarray(value)  # (np.ascontiguousarray would turn a 0-d scale into shape [1])
        self.new_inits.append(numpy_helper.from_array(value if value.flags.c_contiguous else value.copy(), name))
        return name

    def weight_of_matmul(self, node) -> tuple[np.ndarray, str] | None:
        """([N, K] float weight, initializer name) of ``MatMul(A, W)`` with a constant W."""
        b = node.input[1]
        arr = self.array(b)
        if arr is not None and arr.ndim == 2 and arr.dtype == np.float32:
            return arr.T, b
        t = self.producer.get(b)
        if t is not None and t.op_type == "Transpose" and self.array(t.input[0]) is not None:
            perm = [a.ints for a in t.attribute if a.name == "perm"]
            src = self.array(t.input[0])
            if src.ndim == 2 and src.dtype == np.float32 and (not perm or list(perm[0]) == [1, 0]):
                return src, t.input[0]
        return None


def _plan_lookup(plan) -> tuple[dict, dict]:
    """({digest: [names]}, {owner: dequantized [N, K] float32}) over quantized decisions."""
    deq, table = {}, {}
    for name in plan.quantized_names():
        owner = plan.owner(name)
        if owner not in deq:
            deq[owner] = plan.dequantized(owner).numpy()
        table.setdefault(_digest(deq[owner]), []).append(name)
    return table, deq


def _pick(names, plan, kind: str) -> str | None:
    hits = [n for n in names if plan.decisions[n].kind == kind]
    return hits[0] if hits else None


def _find_merged(w: np.ndarray, plan, deq) -> list[tuple[str, int, int]] | None:
    """Rows of ``w`` [N, K] that are sibling weights side by side (e.g. a fused q|k|v)."""
    for block, members in _SIBLINGS:
        for layer in range(len(plan.decisions)):
            names = [f"model.layers.{layer}.{block}.{m}.weight" for m in members]
            if names[0] not in plan.decisions:
                if layer > 0:
                    break
                continue
            if not all(n in plan.decisions and plan.decisions[n].weight is not None for n in names):
                continue
            rows, r = [], 0
            for n in names:
                part = deq[plan.owner(n)]
                if part.shape[1] != w.shape[1] or not np.array_equal(w[r:r + part.shape[0]], part):
                    break
                rows.append((n, r, r + part.shape[0]))
                r += part.shape[0]
            else:
                if r == w.shape[0]:
                    return rows
    return None


def find_sites(graph: Graph, plan):
    """[(node index, kind, [(tensor, row0, row1)])] for every quantized weight use in the graph."""
    table, deq = _plan_lookup(plan)
    sites = []
    for i, node in enumerate(graph.g.node):
        if node.op_type == "MatMul" and node.domain in ("", "ai.onnx"):
            found = graph.weight_of_matmul(node)
            if found is None:
                continue
            w, _ = found
            name = _pick(table.get(_digest(w), []), plan, "linear")
            rows = [(name, 0, w.shape[0])] if name else _find_merged(w, plan, deq)
            if rows:
                sites.append((i, "matmul", rows))
        elif node.op_type == "Gather" and node.domain in ("", "ai.onnx"):
            arr = graph.array(node.input[0])
            axis = [a.i for a in node.attribute if a.name == "axis"]
            if arr is None or arr.ndim != 2 or (axis and axis[0] != 0):
                continue
            name = _pick(table.get(_digest(arr), []), plan, "embedding")
            if name:
                sites.append((i, "gather", [(name, 0, arr.shape[0])]))
    return sites


def prune(g: onnx.GraphProto) -> None:
    """Drop Transposes left without consumers and initializers nothing reads any more."""
    while True:
        used = {x for n in g.node for x in n.input} | {o.name for o in g.output}
        dead = [n for n in g.node if n.op_type == "Transpose" and not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            g.node.remove(n)
    used = {x for n in g.node for x in n.input} | {o.name for o in g.output}
    keep = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
