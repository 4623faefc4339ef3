from __future__ import annotations

from slmpack.targets.onnx.fusions import fuse_skip_simplified_layer_norm
from slmpack.targets.onnx.fusions._base import apply
from slmpack.targets.onnx.fusions._testing import LAYERS, count, exported, feeds, max_diff, run


def test_every_norm_after_a_residual_add_fused_same_numbers():
    model, inputs = exported(), feeds()
    before = run(model, inputs)
    res = apply(fuse_skip_simplified_layer_norm.rule(), model)
    # 2 per layer: post-attention, and (next layer's input | final) norm; the first norm has no add
    assert res.applied == 2 * LAYERS
    assert count(model, "SkipSimplifiedLayerNormalization") == 2 * LAYERS
    assert count(model, "Reciprocal") == 1
    assert max_diff(before, run(model, inputs)) < 1e-5
