from __future__ import annotations

from slmpack.exporter.kv_cache import CacheLayout
from slmpack.exporter.passes import ops
from slmpack.exporter.passes._testing import LAYERS, max_diff, program, run
from slmpack.exporter.passes.base import aten
from slmpack.exporter.passes.fuse_rms_norm import fuse_rms_norm


def test_fuse_rms_norm_every_norm_same_numbers_and_decomposes():
    ep, args = program(CacheLayout.IO_CONCAT)
    before = run(ep, args)
    res = fuse_rms_norm(ep)
    assert res.count == 2 * LAYERS + 1 and not res.declined  # two per layer + the final norm
    assert ops.count(ep.graph_module, ops.RMS_NORM) == 2 * LAYERS + 1
    assert not any(n.target is aten.rsqrt.default for n in ep.graph.nodes)
    assert max_diff(before, run(ep, args)) < 1e-5
    # a target that does not know the op: run_decompositions expands it back to aten
    plain = ep.run_decompositions()
    assert ops.count(plain.graph_module) == 0
    assert max_diff(before, run(plain, args)) < 1e-5
