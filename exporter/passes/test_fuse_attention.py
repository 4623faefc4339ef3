from __future__ import annotations

import pytest

from slmpack.exporter.kv_cache import CacheLayout
from slmpack.exporter.passes import ops, run_fusions
from slmpack.exporter.passes._testing import LAYERS, max_diff, program, reset_buffers, run, tiny_spec
from slmpack.exporter.passes.base import aten
from slmpack.exporter.passes.fuse_attention import fuse_attention

LAYOUTS = {CacheLayout.IO_CONCAT: ops.ATTENTION, CacheLayout.IO_STATIC: ops.ATTENTION,
           CacheLayout.BUFFER: ops.ATTENTION_INPLACE}


@pytest.mark.parametrize("layout", list(LAYOUTS), ids=lambda x: x.value)
def test_fuse_attention_every_layer_every_layout(layout):
    ep, args = program(layout)
    reset_buffers(ep)
    before = run(ep, args)
    res = fuse_attention(ep)
    assert res.count == LAYERS and not res.declined
    assert ops.count(ep.graph_module, LAYOUTS[layout]) == LAYERS
    gone = (aten.softmax.int, aten.index_copy.default, aten.index_copy_.default)
    assert not any(n.target in gone for n in ep.graph.nodes)
    # the only cats left are rotate_half's (2 per layer): the cache appends moved into the op
    assert sum(n.target is aten.cat.default for n in ep.graph.nodes) == 2 * LAYERS
    reset_buffers(ep)
    after = run(ep, args)  # logits and (updated) caches
    assert max_diff(before, after) < 1e-5
    plain = ep.run_decompositions()
    assert ops.count(plain.graph_module) == 0
    reset_buffers(plain)
    assert max_diff(before, run(plain, args)) < 1e-5


def test_all_passes_compose_mha():
    """Every pass on one program (multi-head, no GQA repetition), numbers unchanged."""
    ep, args = program(CacheLayout.IO_CONCAT, tiny_spec(kv_heads=4))
    before = run(ep, args)
    counts = {k: r.count for k, r in run_fusions(ep).items()}
    assert counts == {"fuse_qkv": LAYERS, "fuse_gate_up": LAYERS, "fuse_rms_norm": 2 * LAYERS + 1,
                      "fuse_rope": 2 * LAYERS, "fuse_attention": LAYERS}
    assert max_diff(before, run(ep, args)) < 1e-5
