"""ModelSpec deltas from config.json: what each family switches on, typed refusals naming the field."""
from __future__ import annotations

import pytest

from slmpack.errors import SlmpackError
from slmpack.exporter.deltas import AttentionType, BlockStyle, ExpertLayout, NormKind, Positions, QKNorm, WeightLayout
from slmpack.exporter.spec import spec_from_config
from tests.tiny_families import family_config


def _spec(family, variant=0, **override):
    _, cfg = family_config(family, variant)
    d = cfg.to_dict()
    d.update(override)
    return spec_from_config(d)


def test_family_deltas_are_read_from_config():
    q = _spec("qwen3")
    assert q.deltas.qk_norm is QKNorm.PER_HEAD and q.head_dim == 16
    assert [lay.attention for lay in q.layers] == [AttentionType.SLIDING, AttentionType.FULL, AttentionType.SLIDING]
    g2 = _spec("gemma2")
    assert g2.deltas.block is BlockStyle.SANDWICH and g2.deltas.attn_softcap == 4.0
    assert g2.deltas.final_softcap == 3.0 and g2.deltas.norm_offset == 1.0
    assert g2.deltas.attention_scale == pytest.approx(20 ** -0.5)
    g3 = _spec("gemma3")
    assert g3.deltas.local_rope_theta == 1000.0 and g3.rope.theta == 100000.0 and g3.rope.factor == 2.0
    assert g3.layer(0).local_rope and not g3.layer(1).local_rope
    p2 = _spec("phi")
    assert p2.deltas.block is BlockStyle.PARALLEL and p2.deltas.norm is NormKind.LAYER and p2.rotary_dim == 4
    assert not p2.deltas.gated_mlp and p2.deltas.lm_head_bias
    p3 = _spec("phi3")
    assert p3.deltas.weights is WeightLayout.PHI3_FUSED and p3.rotary_dim == 6
    assert p3.deltas.longrope.original_max_position_embeddings == 16
    gpt = _spec("gpt2")
    assert gpt.deltas.positions is Positions.LEARNED and gpt.deltas.weights is WeightLayout.GPT2_CONV1D
    assert [lay.rope for lay in _spec("smollm3").layers] == [True, False, True]
    assert _spec("olmo2").deltas.qk_norm is QKNorm.FULL_WIDTH
    gr = _spec("granite")
    assert (gr.deltas.embedding_scale, gr.deltas.residual_multiplier, gr.deltas.logits_divisor) == (6.0, 0.4, 3.0)
    assert "qk_norm=per_head" in q.delta_names() and "nope_layers=[1]" in _spec("smollm3").delta_names()
    mx, mx1 = _spec("mixtral"), _spec("mixtral", 1)
    assert (mx.deltas.moe.num_experts, mx.deltas.moe.top_k, mx.deltas.moe.expert_size) == (4, 2, 40)
    assert (mx1.deltas.moe.num_experts, mx1.deltas.moe.top_k, mx1.windows) == (8, 3, (12, 12, 12))
    assert mx.deltas.moe.layout is ExpertLayout.MIXTRAL and mx.deltas.moe.norm_topk_prob
    assert "moe=4 experts (40 wide) top-2 renormalized" in mx.delta_names()
    gm = _spec("granitemoe", 1)
    assert gm.deltas.moe.layout is ExpertLayout.GRANITE_FUSED
    assert (gm.deltas.moe.num_experts, gm.deltas.moe.top_k) == (4, 1)
    assert (gm.deltas.embedding_scale, gm.deltas.attention_scale, gm.deltas.logits_divisor) == (7.0, 0.2, 4.0)
    qm, qm1 = _spec("qwen2_moe"), _spec("qwen2_moe", 1)
    q_moe = qm.deltas.moe
    assert (q_moe.expert_size, q_moe.shared_expert_size, q_moe.norm_topk_prob) == (24, 48, False)
    assert qm.attention_bias and not qm.deltas.o_bias and qm.windows == (None, None, None)
    assert qm1.deltas.moe.norm_topk_prob and qm1.windows == (12, None, 12)
    assert "moe=4 experts (24 wide) top-2 + shared expert (48 wide)" in qm.delta_names()


@pytest.mark.parametrize("family,override,field", [
    ("gpt2", {"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx"),
    ("gpt2", {"reorder_and_upcast_attn": True}, "reorder_and_upcast_attn"),
    ("gemma2", {"hidden_activation": "relu"}, "hidden_activation"),
    ("phi", {"hidden_act": "quick_gelu"}, "hidden_act"),
    ("qwen3", {"layer_types": ["full_attention", "chunked_attention", "full_attention"]}, "layer_types"),
    ("phi3", {"partial_rotary_factor": 1.5, "rope_parameters": None, "rope_scaling": None}, "partial_rotary_factor"),
    ("mixtral", {"num_experts_per_tok": 5}, "num_experts_per_tok"),
    ("granitemoe", {"num_local_experts": 0}, "num_local_experts"),
    ("mixtral", {"hidden_act": "relu2"}, "hidden_act"),
    ("qwen2_moe", {"mlp_only_layers": [1]}, "mlp_only_layers"),
    ("qwen2_moe", {"decoder_sparse_step": 2}, "decoder_sparse_step"),
    ("qwen2_moe", {"num_experts": 0}, "num_experts"),
])
def test_unknown_delta_is_refused_naming_the_field(family, override, field):
    with pytest.raises(SlmpackError) as e:
        _spec(family, **override)
    assert e.value.details.get("field") == field
    assert field in str(e.value)


def test_multimodal_gemma3_is_refused():
    _, cfg = family_config("gemma3", 0)
    d = {**cfg.to_dict(), "architectures": ["Gemma3ForConditionalGeneration"]}
    with pytest.raises(SlmpackError) as e:
        spec_from_config(d)
    assert e.value.code == "E_ARCH_UNSUPPORTED"


def test_llama_spec_has_no_deltas():
    from tests.tiny_models import hf_config

    for fam in ("llama", "mistral", "qwen2"):
        s = spec_from_config({**hf_config(fam).to_dict(), "architectures": [f"{fam.capitalize()}ForCausalLM"]})
        assert s.deltas.used() == [] and s.layers == ()


def test_sliding_window_zero_is_off_only_when_use_sliding_window_is_false():
    from slmpack.exporter.config_checks import check_config

    _, cfg = family_config("qwen2_moe", 0)
    d = cfg.to_dict()
    assert d["sliding_window"] == 0 and d["use_sliding_window"] is False   # what transformers writes
    check_config(d)
    with pytest.raises(SlmpackError) as e:
        check_config({**d, "use_sliding_window": True})
    assert e.value.details["field"] == "sliding_window"
