from __future__ import annotations

from slmpack.exporter.kv_cache import CacheLayout
from slmpack.exporter.passes import ops
from slmpack.exporter.passes._testing import LAYERS, max_diff, program, run
from slmpack.exporter.passes.base import aten
from slmpack.exporter.passes.fuse_rope import fuse_rope


def test_fuse_rope_q_and_k_per_layer_same_numbers_and_decomposes():
    ep, args = program(CacheLayout.IO_CONCAT)
    before = run(ep, args)
    res = fuse_rope(ep)
    assert res.count == 2 * LAYERS and not res.declined  # queries and keys of every layer
    assert ops.count(ep.graph_module, ops.ROPE) == 2 * LAYERS
    assert not any(n.target is aten.neg.default for n in ep.graph.nodes)
    assert max_diff(before, run(ep, args)) < 1e-5
    plain = ep.run_decompositions()
    assert ops.count(plain.graph_module) == 0
    assert max_diff(before, run(plain, args)) < 1e-5
