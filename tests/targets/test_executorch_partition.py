"""The target's XNNPACK partitioner (``targets/executorch/partition.py``) computes what the graph
says: a tanh GELU (GPT-2's ``gelu_new``) is not handed to XNNPACK's erf GELU."""
from __future__ import annotations

import pytest
import torch

from slmpack.targets.executorch.partition import partitioner


def _lowered(module: torch.nn.Module, x: torch.Tensor):
    from executorch.exir import to_edge_transform_and_lower
    from executorch.runtime import Runtime

    with torch.no_grad():
        edge = to_edge_transform_and_lower(torch.export.export(module, (x,)), partitioner=[partitioner()])
        delegated = [n for n in edge.exported_program().graph.nodes if "call_delegate" in str(n.target)]
        out = Runtime.get().load_program(edge.to_executorch().buffer).load_method("forward").execute([x])[0]
    return out, bool(delegated)


@pytest.mark.parametrize("approximate,delegated", [("tanh", False), ("none", True)])
def test_gelu_runs_the_function_the_graph_names(approximate, delegated):
    x = torch.randn(64, 32, generator=torch.Generator().manual_seed(0)) * 5
    m = torch.nn.GELU(approximate=approximate).eval()
    got, was_delegated = _lowered(m, x)
    # fp32 elementwise: a few ulp of |y| (the two GELUs differ by up to 4.7e-4 on these inputs)
    assert torch.allclose(got, m(x), rtol=1e-6, atol=1e-6), float((got - m(x)).abs().max())
    assert was_delegated is delegated
