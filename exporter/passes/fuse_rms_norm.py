"""fuse_rms_norm: RMSNorm as one op, ``slmpack::rms_norm(x, weight, eps)``.

pattern   mul(weight, mul(h, rsqrt(add(mean(pow(h, 2), [-1], keepdim), eps)))), h = x.float()
          (either operand order of both muls; no-op casts looked through)
check     eps a Python number; reduction over the last dim only with keepdim; exponent 2;
          weight a 1-D parameter as long as the normalized dim
rewrite   slmpack::rms_norm(x, weight, eps); its decomposition (exporter/passes/ops.py) is the
          reference's own math, so targets that do not know the op still work
"""
from __future__ import annotations

import torch
from torch.fx import Node

from slmpack.exporter.passes import ops
from slmpack.exporter.passes.base import FxFusion, aten, is_call, last_dim, param_tensor, unwrap, val
from slmpack.exporter.passes.graph_utils import emit


_CASTS = (aten.to.dtype, aten._to_copy.default)


def _normalized(node) -> dict | None:
    """[cast](h * rsqrt(mean(h^2) + eps)) -> captures, else None."""
    node = unwrap(node)
    if is_call(node, *_CASTS):  # .to(input dtype) after fp32 math (fp16/bf16 models)
        node = unwrap(node.args[0])
    if not is_call(node, aten.mul.Tensor):
        return None
    for h, r in (node.args, node.args[::-1]):
        r = unwrap(r)
        if not is_call(r, aten.rsqrt.default):
            continue
        add = unwrap(r.args[0])
        if not is_call(add, aten.add.Tensor, aten.add.Scalar):
            continue
        mean, eps = add.args[0], add.args[1]
        if isinstance(mean, (int, float)):
            mean, eps = eps, mean
        mean = unwrap(mean)
        if not is_call(mean, aten.mean.dim):
            continue
        pow_ = unwrap(mean.args[0])
        if not is_call(pow_, aten.pow.Tensor_Scalar) or unwrap(pow_.args[0]) is not unwrap(h):
            continue
        return {"h": h, "eps": eps, "mean": mean, "pow": pow_}
    return None


class FuseRmsNorm(FxFusion):
    name = "fuse_rms_norm"

    def pattern(self, ep, node: Node) -> dict | None:
        if not is_call(node, aten.mul.Tensor):
            return None
        for w, n in (node.args, node.args[::-1]):
            if not isinstance(w, Node) or w.op != "placeholder":
                continue
            m = _normalized(n)
            if m is not None:
                return {**m, "anchor": node, "weight": w}
        return None

    def check(self, ep, m: dict) -> str | None:
        if not isinstance(m["eps"], (int, float)):
            return "epsilon is not a constant"
        h = val(m["h"])
        dims = list(m["mean"].args[1]) if len(m["mean"].args) > 1 else []
        keepdim = m["mean"].args[2] if len(m["mean"].args) > 2 else m["mean"].kwargs.get("keepdim", False)
        if len(dims) != 1 or not last_dim(dims[0], h.dim()) or not keepdim:
            return f"reduction over dims {dims} (keepdim={keepdim}), not the last dim"
        if m["pow"].args[1] != 2:
            return f"exponent {m['pow'].args[1]}, not 2"
        w = param_tensor(ep, m["weight"])
        if w is None:
            return "scale is not a parameter"
        if w.dim() != 1 or w.shape[0] != h.shape[-1]:
            return f"scale of shape {tuple(w.shape)} for a normalized dim of {h.shape[-1]}"
        if _promoted(w.dtype, val(_op_input(m))) != val(m["anchor"]).dtype:
            return "result dtype differs from the op's (mixed-precision pattern not understood)"
        return None

    def rewrite(self, ep, m: dict) -> None:
        graph = ep.graph_module.graph
        anchor = m["anchor"]
        x = _op_input(m)
        with graph.inserting_before(anchor):
            fused = emit(graph, ops.RMS_NORM, (x, m["weight"], float(m["eps"])), like=anchor)
        anchor.replace_all_uses_with(fused)
        graph.erase_node(anchor)


def _op_input(m: dict) -> Node:
    """The op upcasts itself: feed it x from before the reference's ``x.float()``."""
    x = unwrap(m["h"])
    if is_call(x, *_CASTS) and isinstance(x.args[0], Node) and val(x.args[0]).is_floating_point():
        return x.args[0]
    return x


def _promoted(weight_dtype: torch.dtype, x) -> torch.dtype:
    return torch.promote_types(weight_dtype, x.dtype)


fuse_rms_norm = FuseRmsNorm()
