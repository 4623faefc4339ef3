from __future__ import annotations

from slmpack.targets.onnx.fusions import fuse_rms_normalization, fuse_skip_simplified_layer_norm
from slmpack.targets.onnx.fusions._base import apply
from slmpack.targets.onnx.fusions._testing import count, exported, feeds, max_diff, run


def test_first_norm_declined_below_opset_23_with_reason():
    model = exported()
    apply(fuse_skip_simplified_layer_norm.rule(), model)
    res = apply(fuse_rms_normalization.rule(20), model)
    assert res.applied == 0 and count(model, "RMSNormalization") == 0
    assert res.declined and "opset 20 < 23" in res.declined[0].reason


def test_first_norm_fused_at_opset_23_same_numbers():
    model, inputs = exported(), feeds()
    model.opset_imports[""] = 23
    before = run(model, inputs)
    apply(fuse_skip_simplified_layer_norm.rule(), model)
    res = apply(fuse_rms_normalization.rule(23), model)
    assert res.applied == 1 and count(model, "RMSNormalization") == 1
    assert count(model, "Reciprocal") == 0
    assert max_diff(before, run(model, inputs)) < 1e-5
