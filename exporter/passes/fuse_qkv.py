"""fuse_qkv: the q/k/v projections of one attention block -> one linear + split.

pattern   aten.linear(x, <prefix>.q_proj.weight) and its sibling linears of the same x on
          <prefix>.k_proj / <prefix>.v_proj (HF module names, as exporter/reference.py uses)
check     all three present; floating-point parameter weights of one dtype and input size;
          biases on all or none
rewrite   split_with_sizes(linear(x, cat[Wq, Wk, Wv]), [Nq, Nk, Nv]); new parameter
          <prefix>.qkv_proj.weight (and .bias); the three old weights leave the program

Plain aten in, plain aten out: every target consumes the result without knowing this pass.
"""
from __future__ import annotations

from torch.fx import Node

from slmpack.exporter.passes.base import FxFusion
from slmpack.exporter.passes.linear_merge import check_siblings, find_siblings, merge


class FuseQKV(FxFusion):
    name = "fuse_qkv"
    suffixes = ("q_proj", "k_proj", "v_proj")

    def pattern(self, ep, node: Node) -> dict | None:
        return find_siblings(ep, node, self.suffixes)

    def check(self, ep, m: dict) -> str | None:
        return check_siblings(ep, m)

    def rewrite(self, ep, m: dict) -> None:
        merge(ep, m, "qkv_proj")


fuse_qkv = FuseQKV()
