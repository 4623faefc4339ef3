from __future__ import annotations

from slmpack.exporter.kv_cache import CacheLayout
from slmpack.exporter.passes._testing import LAYERS, max_diff, program, run
from slmpack.exporter.passes.base import aten
from slmpack.exporter.passes.fuse_gate_up import fuse_gate_up


def test_fuse_gate_up_one_linear_per_mlp_same_numbers():
    ep, args = program(CacheLayout.IO_STATIC)
    before = run(ep, args)
    n_linear = sum(1 for n in ep.graph.nodes if n.target is aten.linear.default)
    res = fuse_gate_up(ep)
    assert res.count == LAYERS and not res.declined
    assert sum(1 for n in ep.graph.nodes if n.target is aten.linear.default) == n_linear - LAYERS
    assert sum(1 for n in ep.graph.nodes if n.target is aten.split_with_sizes.default) == LAYERS
    assert "ref.model.layers.1.mlp.gate_up_proj.weight" in ep.state_dict
    assert not any(".gate_proj." in k or ".up_proj." in k for k in ep.state_dict)
    assert max_diff(before, run(ep, args)) < 1e-5
