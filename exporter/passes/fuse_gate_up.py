"""fuse_gate_up: the gate and up projections of one SwiGLU MLP -> one linear + split.

pattern   aten.linear(x, <prefix>.gate_proj.weight) and its sibling linear of the same x on
          <prefix>.up_proj
check     both present; floating-point parameter weights of one dtype and input size; biases on
          both or neither
rewrite   split_with_sizes(linear(x, cat[Wgate, Wup]), [F, F]); new parameter
          <prefix>.gate_up_proj.weight (and .bias); the old weights leave the program

Plain aten in, plain aten out: every target consumes the result without knowing this pass.
"""
from __future__ import annotations

from torch.fx import Node

from slmpack.exporter.passes.base import FxFusion
from slmpack.exporter.passes.linear_merge import check_siblings, find_siblings, merge


class FuseGateUp(FxFusion):
    name = "fuse_gate_up"
    suffixes = ("gate_proj", "up_proj")

    def pattern(self, ep, node: Node) -> dict | None:
        return find_siblings(ep, node, self.suffixes)

    def check(self, ep, m: dict) -> str | None:
        return check_siblings(ep, m)

    def rewrite(self, ep, m: dict) -> None:
        merge(ep, m, "gate_up_proj")


fuse_gate_up = FuseGateUp()
