from __future__ import annotations

import pytest
from onnx_ir.passes import common as ir_passes

from slmpack.targets.onnx.fusions import fuse_group_query_attention, fuse_rotary_embedding
from slmpack.targets.onnx.fusions._base import apply
from slmpack.targets.onnx.fusions._testing import LAYERS, count, exported, feeds, max_diff, run


def _fuse(model) -> int:
    apply(fuse_rotary_embedding.rule(), model)
    n = sum(apply(r, model).applied for r in fuse_group_query_attention.rules())
    ir_passes.RemoveUnusedNodesPass()(model)
    return n


@pytest.mark.parametrize("kv_heads", [2, 4], ids=["gqa", "mha"])
def test_every_attention_block_fused_same_numbers_prefill_and_decode(kv_heads):
    model = exported(kv_heads)
    cases = [feeds(kv_heads, seq=5, past=3), feeds(kv_heads, seq=1, past=7), feeds(kv_heads, seq=6, past=0)]
    before = [run(model, f) for f in cases]
    assert _fuse(model) == LAYERS
    assert count(model, "GroupQueryAttention") == LAYERS
    assert count(model, "Softmax") == 0 and count(model, "Concat") == 0  # cache appends inside GQA
    for f, b in zip(cases, before):
        assert max_diff(b, run(model, f)) < 1e-5


def test_declines_when_the_mask_is_not_causal_and_attention_mask():
    model = exported()
    model.graph.inputs[1].name = "key_padding"  # the mask no longer comes from attention_mask
    apply(fuse_rotary_embedding.rule(), model)
    rule = fuse_group_query_attention.rules()[0]
    assert apply(rule, model).applied == 0
    assert rule.declined and "mask" in next(iter(rule.declined)).reason
