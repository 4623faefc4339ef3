"""The XNNPACK partitioner every ExecuTorch program of this target is lowered with: the stock
``XnnpackPartitioner`` configs (executorch 1.5.1) with two of them replaced.

* ``LinearConfig`` also claims an int8 per-channel weight-only linear (float activation,
  ``dequantize_affine`` weight) as one fully-connected node: XNNPACK's f32-qc8w GEMM. The stock
  config decomposes it into ``permute_copy + mm`` and drops the scales (see ``quantize.py``).
* ``GeluConfig`` declines ``gelu(approximate="tanh")`` (GPT-2's ``gelu_new``, Gemma's
  ``gelu_pytorch_tanh``). The stock config claims every ``aten.gelu`` and
  ``backends/xnnpack/operators/op_gelu.py`` defines XNNPACK's erf GELU without reading
  ``approximate``: the program computes the other function (on ``5 * randn`` inputs: max |Δ| 4.7e-4
  against ``gelu(x, approximate="tanh")``, 1e-6 against the erf GELU). Declined, ``aten.gelu``
  stays in the program and runs as ExecuTorch's portable gelu kernel, which honours ``approximate``
  (1.5e-7 on the same inputs); a tiny elementwise op, so the FLOP share XNNPACK runs barely moves.
"""
from __future__ import annotations

import torch

_CONFIGS = None


def _weight_only_int8_dequant(node, weight_idx: int) -> bool:
    """``dequantize_affine(q int8, block_size=[1, in_features], scale, zp, int8, qmin, 127)`` on a
    static weight: the only weight-only pattern we let XNNPACK's fully-connected claim."""
    dq = node.args[weight_idx] if len(node.args) > weight_idx else None
    if not isinstance(dq, torch.fx.Node) or dq.op != "call_function":
        return False
    if "dequantize_affine" not in getattr(dq.target, "__name__", ""):
        return False
    q = dq.args[0]
    val = q.meta.get("val") if isinstance(q, torch.fx.Node) else None
    if val is None or val.dtype != torch.int8 or val.dim() != 2:
        return False
    block, qmin, qmax = list(dq.args[1]), dq.args[5], dq.args[6]
    return block == [1, val.shape[1]] and qmin in (-128, -127) and qmax == 127


def approximate(node) -> str:
    """The ``approximate`` argument of an ``aten.gelu`` node (default ``"none"``)."""
    return node.kwargs.get("approximate", node.args[1] if len(node.args) > 1 else "none")


def partitioner_configs():
    """XnnpackPartitioner's configs with LinearConfig and GeluConfig replaced (module docstring).
    Every other linear (fp32, dynamic-quant, static-quant) and every erf GELU is partitioned
    exactly as by the stock configs."""
    global _CONFIGS
    if _CONFIGS is not None:
        return _CONFIGS
    from executorch.backends.xnnpack.partition.config import ALL_PARTITIONER_CONFIGS
    from executorch.backends.xnnpack.partition.config.gemm_configs import LinearConfig
    from executorch.backends.xnnpack.partition.config.generic_node_configs import GeluConfig
    from executorch.backends.xnnpack.utils.quant_utils import is_dequant
    from executorch.backends.xnnpack.utils.utils import get_input_node

    class WeightOnlyLinearConfig(LinearConfig):
        def _weight_only(self, node) -> bool:
            return (_weight_only_int8_dequant(node, self.weight_idx)
                    and not is_dequant(get_input_node(node, self.act_idx)))

        def _get_act_deps(self, node, ep, precision):
            if self._weight_only(node):
                return True, []          # float activation: nothing to fuse
            return super()._get_act_deps(node, ep, precision)

        def _get_output_deps(self, node, ep, precision):
            if self._weight_only(node):
                return True, []          # float output: no quantize after the GEMM
            return super()._get_output_deps(node, ep, precision)

    class ErfGeluConfig(GeluConfig):
        def check_constraints(self, node, ep) -> bool:
            return approximate(node) == "none" and super().check_constraints(node, ep)

    swap = {LinearConfig: WeightOnlyLinearConfig, GeluConfig: ErfGeluConfig}
    _CONFIGS = [swap.get(c, c) for c in ALL_PARTITIONER_CONFIGS]
    return _CONFIGS


def partitioner():
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

    return XnnpackPartitioner(configs=partitioner_configs())
