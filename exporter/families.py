"""Per-family readers: config.json of a non-Llama architecture -> ModelSpec keyword arguments.

Each reader returns the common Llama-shaped numbers plus a typed ``Deltas`` and per-layer
``LayerSpec``s. A config value we do not implement is a typed refusal naming the field.
"""
from __future__ import annotations

import dataclasses
import math

from slmpack.errors import BadInputError
from slmpack.exporter.deltas import (AttentionType, BlockStyle, Deltas, ExpertLayout, LayerSpec, LongRope, MoESpec,
                                     NormKind, Positions, QKNorm, WeightLayout, activation_from, refuse_if)


def _rope_params(cfg: dict) -> dict:
    return dict(cfg.get("rope_parameters") or cfg.get("rope_scaling") or {})


def _rotary_dim(cfg: dict, head_dim: int) -> int | None:
    factor = _rope_params(cfg).get("partial_rotary_factor", cfg.get("partial_rotary_factor", 1.0))
    factor = float(factor if factor is not None else 1.0)
    refuse_if(not 0 < factor <= 1, "partial_rotary_factor", f"{factor} is outside (0, 1]")
    dim = int(head_dim * factor)
    refuse_if(dim % 2 != 0, "partial_rotary_factor", f"rotary dim {dim} is odd")
    return None if dim == head_dim else dim


def _layers(cfg: dict, n: int, sliding_on: bool, local_rope: bool = False,
            nope: list | None = None) -> tuple[LayerSpec, ...]:
    types = cfg.get("layer_types") or ["full_attention"] * n
    if len(types) != n or (nope is not None and len(nope) != n):
        raise BadInputError("config.json: layer_types / no_rope_layers length != num_hidden_layers",
                            "E_CONFIG_INVALID", details={"field": "layer_types"})
    window = cfg.get("sliding_window")
    out = []
    for i, t in enumerate(types):
        refuse_if(t not in ("full_attention", "sliding_attention"), "layer_types", f"layer type {t!r}")
        sliding = sliding_on and t == "sliding_attention" and window is not None
        out.append(LayerSpec(attention=AttentionType.SLIDING if sliding else AttentionType.FULL,
                             window=int(window) if sliding else None,
                             rope=bool(nope[i]) if nope is not None else True,
                             local_rope=local_rope and t == "sliding_attention"))
    return tuple(out)


def _longrope(cfg: dict, rotary_dim: int) -> LongRope | None:
    p = _rope_params(cfg)
    if p.get("rope_type", p.get("type")) != "longrope":
        return None
    orig = int(p.get("original_max_position_embeddings") or cfg["original_max_position_embeddings"])
    factor = p.get("factor") or cfg["max_position_embeddings"] / orig
    attn = p.get("attention_factor")
    if attn is None:
        attn = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(orig))
    lr = LongRope(tuple(float(v) for v in p["short_factor"]), tuple(float(v) for v in p["long_factor"]),
                  orig, float(attn))
    lr.check(rotary_dim)
    return lr


def _sliding_everywhere(cfg: dict, n: int) -> tuple[LayerSpec, ...]:
    w = cfg.get("sliding_window")
    if w is None:
        return tuple(LayerSpec() for _ in range(n))
    return tuple(LayerSpec(attention=AttentionType.SLIDING, window=int(w)) for _ in range(n))


def qwen3(cfg, hd):
    n = int(cfg["num_hidden_layers"])
    return Deltas(qk_norm=QKNorm.PER_HEAD), _layers(cfg, n, bool(cfg.get("use_sliding_window")))


def smollm3(cfg, hd):
    n = int(cfg["num_hidden_layers"])
    nope = cfg.get("no_rope_layers")
    if nope is None:
        every = int(cfg.get("no_rope_layer_interval", 4))
        nope = [int((i + 1) % every != 0) for i in range(n)]
    return Deltas(), _layers(cfg, n, bool(cfg.get("use_sliding_window")), nope=list(nope))


def olmo2(cfg, hd):
    n = int(cfg["num_hidden_layers"])
    return Deltas(qk_norm=QKNorm.FULL_WIDTH, block=BlockStyle.POST_NORM), tuple(LayerSpec() for _ in range(n))


def granite(cfg, hd):
    n = int(cfg["num_hidden_layers"])
    return Deltas(embedding_scale=float(cfg.get("embedding_multiplier", 1.0)),
                  attention_scale=float(cfg.get("attention_multiplier", hd ** -0.5)),
                  residual_multiplier=float(cfg.get("residual_multiplier", 1.0)),
                  logits_divisor=float(cfg.get("logits_scaling", 1.0))), tuple(LayerSpec() for _ in range(n))


def _moe(cfg: dict, layout: ExpertLayout) -> MoESpec:
    """Router + experts of every layer. Ignored on purpose: router_jitter_noise (training only, as
    transformers does at inference), output_router_logits / router_aux_loss_coef (training losses)."""
    return MoESpec(num_experts=int(cfg.get("num_local_experts", 8)), top_k=int(cfg.get("num_experts_per_tok", 2)),
                   expert_size=int(cfg["intermediate_size"]), norm_topk_prob=True, layout=layout)


def qwen2_moe(cfg, hd):
    """Qwen2-MoE: q/k/v bias (``qkv_bias``, o_proj none), experts + a sigmoid-gated shared expert on
    every layer. Dense-MLP layers (mlp_only_layers, decoder_sparse_step > 1) are refused."""
    n = int(cfg["num_hidden_layers"])
    refuse_if(bool(cfg.get("mlp_only_layers")), "mlp_only_layers", "dense MLP layers between MoE layers")
    refuse_if(int(cfg.get("decoder_sparse_step", 1)) != 1, "decoder_sparse_step", "MoE on every layer only (1)")
    moe = MoESpec(num_experts=int(cfg.get("num_experts", 60)), top_k=int(cfg.get("num_experts_per_tok", 4)),
                  expert_size=int(cfg["moe_intermediate_size"]), norm_topk_prob=bool(cfg.get("norm_topk_prob", False)),
                  layout=ExpertLayout.QWEN2_MOE, shared_expert_size=int(cfg["shared_expert_intermediate_size"]),
                  keys=("num_experts", "moe_intermediate_size"))
    return Deltas(activation=activation_from(cfg.get("hidden_act", "silu"), "hidden_act"), moe=moe), \
        _layers(cfg, n, bool(cfg.get("use_sliding_window")))


def mixtral(cfg, hd):
    n = int(cfg["num_hidden_layers"])
    return Deltas(activation=activation_from(cfg.get("hidden_act", "silu"), "hidden_act"),
                  moe=_moe(cfg, ExpertLayout.MIXTRAL)), _sliding_everywhere(cfg, n)


def granite_moe(cfg, hd):
    """Granite's multipliers (attention_multiplier defaults to 1.0 here, as GraniteMoeConfig) + MoE;
    the router's softmax over the top-k logits equals the renormalized top-k softmax."""
    d, layers = granite({"attention_multiplier": 1.0, **cfg}, hd)
    return dataclasses.replace(d, activation=activation_from(cfg.get("hidden_act", "silu"), "hidden_act"),
                               moe=_moe(cfg, ExpertLayout.GRANITE_FUSED)), layers


def gemma(cfg, hd):
    n = int(cfg["num_hidden_layers"])
    act = activation_from(cfg.get("hidden_act") or cfg.get("hidden_activation"), "hidden_act")
    return Deltas(norm_offset=1.0, activation=act, embedding_scale=float(cfg["hidden_size"]) ** 0.5), \
        tuple(LayerSpec() for _ in range(n))


def _gemma2_like(cfg, hd, qk: QKNorm, local: bool):
    n = int(cfg["num_hidden_layers"])
    scalar = cfg.get("query_pre_attn_scalar") or hd
    caps = [cfg.get(k) for k in ("attn_logit_softcapping", "final_logit_softcapping")]
    if local:  # transformers' Gemma 3 reads attn_logit_softcapping but never applies it: neither do we
        caps[0] = None
    d = Deltas(norm_offset=1.0, qk_norm=qk, block=BlockStyle.SANDWICH,
               activation=activation_from(cfg.get("hidden_activation"), "hidden_activation"),
               embedding_scale=float(cfg["hidden_size"]) ** 0.5, attention_scale=float(scalar) ** -0.5,
               attn_softcap=float(caps[0]) if caps[0] else None, final_softcap=float(caps[1]) if caps[1] else None,
               local_rope_theta=_local_theta(cfg) if local else None)
    return d, _layers(cfg, n, True, local_rope=local)


def _local_theta(cfg) -> float:
    local = (cfg.get("rope_parameters") or {}).get("sliding_attention") or {}
    kind = local.get("rope_type", "default")
    refuse_if(kind != "default", "rope_parameters.sliding_attention", f"rope type {kind!r} (default only)")
    return float(local.get("rope_theta", cfg.get("rope_local_base_freq", 10000.0)))


def gemma2(cfg, hd):
    return _gemma2_like(cfg, hd, QKNorm.NONE, local=False)


def gemma3(cfg, hd):
    return _gemma2_like(cfg, hd, QKNorm.PER_HEAD, local=True)


def phi(cfg, hd):
    n = int(cfg["num_hidden_layers"])
    return Deltas(norm=NormKind.LAYER, block=BlockStyle.PARALLEL,
                  activation=activation_from(cfg.get("hidden_act", "gelu_new"), "hidden_act"), gated_mlp=False,
                  qk_norm=QKNorm.LAYER_PER_HEAD if cfg.get("qk_layernorm") else QKNorm.NONE,
                  rotary_dim=_rotary_dim(cfg, hd), weights=WeightLayout.PHI, o_bias=True,
                  lm_head_bias=True), tuple(LayerSpec() for _ in range(n))


def phi3(cfg, hd):
    n = int(cfg["num_hidden_layers"])
    rot = _rotary_dim(cfg, hd)
    return Deltas(activation=activation_from(cfg.get("hidden_act", "silu"), "hidden_act"), rotary_dim=rot,
                  longrope=_longrope(cfg, rot or hd), weights=WeightLayout.PHI3_FUSED), _sliding_everywhere(cfg, n)


def gpt2(cfg, hd):
    n = int(cfg["n_layer"])
    refuse_if(bool(cfg.get("scale_attn_by_inverse_layer_idx")), "scale_attn_by_inverse_layer_idx", "not implemented")
    refuse_if(bool(cfg.get("reorder_and_upcast_attn")), "reorder_and_upcast_attn", "not implemented")
    refuse_if(cfg.get("scale_attn_weights") is False, "scale_attn_weights", "unscaled attention is not implemented")
    return Deltas(norm=NormKind.LAYER, activation=activation_from(cfg.get("activation_function", "gelu_new"),
                                                                   "activation_function"),
                  gated_mlp=False, positions=Positions.LEARNED, weights=WeightLayout.GPT2_CONV1D,
                  o_bias=True), tuple(LayerSpec() for _ in range(n))


def gpt2_common(cfg: dict) -> dict:
    """GPT-2 spells the common numbers differently (n_embd, n_layer, ...)."""
    hidden, heads = int(cfg["n_embd"]), int(cfg["n_head"])
    return dict(vocab_size=int(cfg["vocab_size"]), hidden_size=hidden,
                intermediate_size=int(cfg.get("n_inner") or 4 * hidden), num_layers=int(cfg["n_layer"]),
                num_heads=heads, num_kv_heads=heads, head_dim=hidden // heads,
                rms_norm_eps=float(cfg.get("layer_norm_epsilon", 1e-5)),
                max_position_embeddings=int(cfg.get("n_positions", 1024)),
                tie_word_embeddings=bool(cfg.get("tie_word_embeddings", True)), attention_bias=True, mlp_bias=True)


# architecture -> (reader, default tie_word_embeddings, default attention_bias, default mlp_bias)
READERS = {
    "Qwen3ForCausalLM": (qwen3, True, False, False),
    "SmolLM3ForCausalLM": (smollm3, True, False, False),
    "Olmo2ForCausalLM": (olmo2, False, False, False),
    "GraniteForCausalLM": (granite, True, False, False),
    "GemmaForCausalLM": (gemma, True, False, False),
    "Gemma2ForCausalLM": (gemma2, True, False, False),
    "Gemma3ForCausalLM": (gemma3, True, False, False),
    "PhiForCausalLM": (phi, False, True, True),
    "Phi3ForCausalLM": (phi3, False, False, False),
    "GPT2LMHeadModel": (gpt2, True, True, True),
    "MixtralForCausalLM": (mixtral, False, False, False),
    "GraniteMoeForCausalLM": (granite_moe, False, False, False),
    "Qwen2MoeForCausalLM": (qwen2_moe, False, True, False),
}
MODEL_TYPES = {"qwen3": "Qwen3ForCausalLM", "smollm3": "SmolLM3ForCausalLM", "olmo2": "Olmo2ForCausalLM",
               "granite": "GraniteForCausalLM", "gemma": "GemmaForCausalLM", "gemma2": "Gemma2ForCausalLM",
               "gemma3_text": "Gemma3ForCausalLM", "phi": "PhiForCausalLM", "phi3": "Phi3ForCausalLM",
               "gpt2": "GPT2LMHeadModel", "mixtral": "MixtralForCausalLM", "granitemoe": "GraniteMoeForCausalLM",
               "qwen2_moe": "Qwen2MoeForCausalLM"}
LAYER_NORM_EPS_KEY = {"PhiForCausalLM": "layer_norm_eps"}
QKV_BIAS_KEY = {"Qwen2MoeForCausalLM": "qkv_bias"}   # q/k/v bias under its own name; o_proj has none
