"""What every FX fusion pass shares: the result type, the pattern / check / rewrite loop and
small graph helpers. This file holds no pass (one pass per file: ``fuse_*.py``).

The passes work on a ``torch.export.ExportedProgram`` (aten "training" IR, as ``trace.py``
returns it): it is what every target receives, its op set is canonical (``x.float()`` on a float
tensor becomes a no-op ``aten.to`` that the helpers look through), and new weights can be added
to it properly (placeholder + graph signature + state_dict; see ``graph_utils.py``).
"""
from __future__ import annotations

import abc
import operator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.fx import Node

aten = torch.ops.aten

# ops that return their input unchanged when the dtype does not change (x.float() on fp32 ...)
_MAYBE_NOOP = {aten.to.dtype, aten.to.dtype_layout, aten._to_copy.default, aten.alias.default,
               aten.clone.default, aten.contiguous.default}
_ASSERT = aten._assert_tensor_metadata.default


@dataclass
class PassResult:
    """What one pass did: how many fused ops it created, and why it declined the other matches."""

    name: str
    count: int = 0
    declined: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"count": self.count, "declined": list(self.declined)}


class FxFusion(abc.ABC):
    """pattern / check / rewrite over the nodes of an ExportedProgram.

    ``pattern(ep, node)`` returns the captured pieces of a structural match anchored at ``node``
    (or None); ``check(ep, m)`` returns a reason to decline (or None); ``rewrite(ep, m)`` replaces the
    match. Calling the pass returns a :class:`PassResult`; nothing is printed.
    """

    name = "fx_fusion"

    @abc.abstractmethod
    def pattern(self, ep, node: Node) -> dict | None: ...

    def check(self, ep, m: dict) -> str | None:
        return None

    @abc.abstractmethod
    def rewrite(self, ep, m: dict) -> None: ...

    def __call__(self, ep) -> PassResult:
        from slmpack.exporter.passes.graph_utils import cleanup

        gm = ep.graph_module
        result = PassResult(self.name)
        for node in list(gm.graph.nodes):
            if getattr(node, "_erased", False):
                continue
            m = self.pattern(ep, node)
            if m is None:
                continue
            reason = self.check(ep, m)
            if reason:
                result.declined.append(f"{node.name}: {reason}")
                continue
            self.rewrite(ep, m)
            result.count += 1
        if result.count:
            cleanup(ep)
        gm.graph.lint()
        gm.recompile()
        return result


# ---- matching helpers ----------------------------------------------------------------------

def is_call(node: Any, *targets) -> bool:
    return isinstance(node, Node) and node.op == "call_function" and node.target in targets


def val(node: Any):
    """The FakeTensor (or SymInt / list) recorded by torch.export for ``node``."""
    return node.meta.get("val") if isinstance(node, Node) else None


def unwrap(node: Any) -> Any:
    """Look through ops that do nothing here (``aten.to`` to the same dtype, alias, clone)."""
    while is_call(node, *_MAYBE_NOOP) and isinstance(node.args[0], Node):
        src, out = val(node.args[0]), val(node)
        if src is None or out is None or getattr(src, "dtype", None) != getattr(out, "dtype", None):
            break
        if tuple(src.shape) != tuple(out.shape):
            break
        node = node.args[0]
    return node


def data_users(node: Node) -> list[Node]:
    """Users that consume the value (metadata assertions excluded), looking through no-op casts."""
    out = []
    for u in node.users:
        if u.target is _ASSERT:
            continue
        if is_call(u, *_MAYBE_NOOP) and unwrap(u) is node:
            out.extend(data_users(u))
        else:
            out.append(u)
    return out


def single_user(node: Node) -> Node | None:
    users = data_users(node)
    return users[0] if len(users) == 1 else None


def getitem_users(node: Node) -> dict[int, Node]:
    return {u.args[1]: u for u in node.users if u.target is operator.getitem}


def last_dim(dim: int, rank: int) -> bool:
    return dim == -1 or dim == rank - 1


def param_target(ep, node: Any) -> str | None:
    """State-dict name of a parameter placeholder, else None."""
    if not isinstance(node, Node) or node.op != "placeholder":
        return None
    return ep.graph_signature.inputs_to_parameters.get(node.name)


def param_tensor(ep, node: Any) -> torch.Tensor | None:
    target = param_target(ep, node)
    return None if target is None else ep.state_dict[target]


def copy_meta(dst: Node, src: Node) -> None:
    for key in ("nn_module_stack", "stack_trace", "source_fn_stack", "from_node"):
        if key in src.meta:
            dst.meta[key] = src.meta[key]
