from __future__ import annotations

from slmpack.targets.onnx.fusions import fuse_rotary_embedding
from slmpack.targets.onnx.fusions._base import apply
from slmpack.targets.onnx.fusions._testing import LAYERS, count, exported, feeds, max_diff, run


def test_queries_and_keys_of_every_layer_fused_same_numbers():
    model, inputs = exported(), feeds()
    before = run(model, inputs)
    res = apply(fuse_rotary_embedding.rule(), model)
    assert res.applied == 2 * LAYERS and not res.declined
    assert count(model, "RotaryEmbedding") == 2 * LAYERS and count(model, "Neg") == 0
    # one pair of half tables shared by every layer
    assert sorted(n for n in model.graph.initializers if n.startswith("rotary.")) == ["rotary.cos_cache",
                                                                                       "rotary.sin_cache"]
    assert max_diff(before, run(model, inputs)) < 1e-5
