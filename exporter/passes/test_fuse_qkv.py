from __future__ import annotations

import pytest

from slmpack.exporter.kv_cache import CacheLayout
from slmpack.exporter.passes._testing import LAYERS, max_diff, program, run, tiny_spec
from slmpack.exporter.passes.base import aten
from slmpack.exporter.passes.fuse_qkv import fuse_qkv


@pytest.mark.parametrize("bias", [False, True])
def test_fuse_qkv_one_linear_per_block_same_numbers(bias):
    ep, args = program(CacheLayout.IO_CONCAT, tiny_spec(bias=bias))
    before = run(ep, args)
    n_linear = sum(1 for n in ep.graph.nodes if n.target is aten.linear.default)
    res = fuse_qkv(ep)
    assert res.count == LAYERS and not res.declined
    assert sum(1 for n in ep.graph.nodes if n.target is aten.linear.default) == n_linear - 2 * LAYERS
    names = set(ep.state_dict)
    assert "ref.model.layers.0.self_attn.qkv_proj.weight" in names
    assert not any(".q_proj." in k or ".k_proj." in k or ".v_proj." in k for k in names)
    assert ("ref.model.layers.1.self_attn.qkv_proj.bias" in names) == bias
    assert max_diff(before, run(ep, args)) < 1e-5
    assert fuse_qkv(ep).count == 0  # nothing left to fuse
