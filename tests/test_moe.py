"""The MoE block (exporter/moe.py) on its own: top-k ties resolved as transformers' router resolves
them, and one static graph whose size does not grow with the number of experts."""
from __future__ import annotations

import torch

from slmpack.exporter.moe import SparseMoE, routing_weights
from slmpack.exporter.spec import spec_from_config
from tests.tiny_families import family_config, write_family_model


def test_top_k_ties_are_resolved_as_transformers_router():
    import transformers as tf

    # ties straddle the k-th place in rows 0, 1 and 3: a threshold (probs >= k-th) would keep 3 or 4 experts
    logits = torch.tensor([[2.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.5, -1.0, 3.0, 0.25], [1.0, 3.0, 3.0, 3.0]])
    cfg = tf.MixtralConfig(hidden_size=4, num_local_experts=4, num_experts_per_tok=2)
    router = tf.models.mixtral.modeling_mixtral.MixtralTopKRouter(cfg)
    with torch.no_grad():
        router.weight.copy_(torch.eye(4))
        _, scores, idx = router(logits)
    want = torch.zeros(4, 4).scatter(-1, idx, scores)
    got = routing_weights(logits, top_k=2, renormalize=True)
    assert torch.equal(got, want)
    assert (got > 0).sum(-1).tolist() == [2, 2, 2, 2]
    assert torch.allclose(got.sum(-1), torch.ones(4))
    raw = routing_weights(logits, top_k=2, renormalize=False)   # Qwen2-MoE style: not summing to one
    assert raw[2].sum().item() < 0.99 and torch.equal(raw > 0, got > 0)


def test_export_graph_is_static_and_does_not_grow_with_experts():
    counts = {}
    for experts in (4, 16):
        cfg = {**family_config("mixtral", 0)[1].to_dict(), "num_local_experts": experts, "intermediate_size": 24}
        block = SparseMoE(spec_from_config(cfg))
        for p in block.parameters():
            torch.nn.init.normal_(p)
        x = torch.randn(1, 5, 32)
        tokens = torch.export.Dim("tokens", min=1, max=64)
        ep = torch.export.export(block, (x,), dynamic_shapes=({1: tokens},), strict=False)
        ops = [str(n.target) for n in ep.graph.nodes if n.op == "call_function"]
        dynamic = ("aten.nonzero", "aten.index_put", "aten.index_add", "aten._local_scalar_dense", "aten.item",
                   "aten.masked_select", "aten.scatter")
        assert not [o for o in ops if o.startswith(dynamic)], ops
        assert sum(o.startswith("aten.matmul") for o in ops) == 4     # router, gate, up, down: no per-expert loop
        counts[experts] = len(ops)
        y = torch.randn(1, 9, 32)                       # another token count through the same program
        assert torch.allclose(ep.module()(y), block(y), atol=1e-5)
    assert counts[4] == counts[16], counts


def test_fit_counts_every_experts_activations(tmp_path):
    """The fit check's per-token MLP width is what the dense expert evaluation holds, not the
    checkpoint's intermediate_size (an expert's width)."""
    from slmpack.device_tests.fit import facts_from_config
    from slmpack.exporter.spec import load_spec

    path = write_family_model(tmp_path / "m", "mixtral", 0)
    spec, moe = load_spec(path), load_spec(path).deltas.moe
    assert spec.intermediate_size == moe.expert_size
    want = -(-(3 * moe.num_experts * moe.expert_size + moe.num_experts * spec.hidden_size) // 3)
    assert spec.activation_width == want > moe.num_experts * moe.expert_size
    assert facts_from_config(path).intermediate_size == want
    assert spec.to_json()["activation_width"] == want     # packages carry it for `fit PKG`
