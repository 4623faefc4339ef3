"""Tiny random checkpoints of the non-Llama families, two configs each with every delta switched on.

Sequences in the tests are 40 tokens: longer than every sliding window here (8 or 12) and past
LongRoPE's switch (original_max_position_embeddings 16).
"""
from __future__ import annotations

from pathlib import Path

import torch

WINDOW = 8
SEQ = 40


def _sliding(n: int, first_full: bool = False) -> list[str]:
    return ["full_attention" if (i % 2 == 0) == first_full else "sliding_attention" for i in range(n)]


def _base(variant: int, layers: int = 3) -> dict:
    return dict(vocab_size=96, hidden_size=32, intermediate_size=40 + 8 * variant, num_hidden_layers=layers,
                num_attention_heads=4, num_key_value_heads=2 if variant == 0 else 4, max_position_embeddings=128,
                bos_token_id=1, eos_token_id=2, tie_word_embeddings=variant == 0)


def family_config(family: str, variant: int):
    """(model class, config) for ``family`` (variant 0 or 1: GQA vs MHA, tied vs untied, ...)."""
    import transformers as tf

    b, w = _base(variant), WINDOW + 4 * variant
    if family == "qwen3":
        return tf.Qwen3ForCausalLM, tf.Qwen3Config(**b, head_dim=16, rms_norm_eps=1e-5, attention_bias=variant == 1,
                                                   use_sliding_window=True, sliding_window=w,
                                                   layer_types=_sliding(3, variant == 1), max_window_layers=0)
    if family == "gemma":
        return tf.GemmaForCausalLM, tf.GemmaConfig(**b, head_dim=16 if variant == 0 else 8, rms_norm_eps=1e-5,
                                                   hidden_act="gelu_pytorch_tanh")
    if family == "gemma2":
        return tf.Gemma2ForCausalLM, tf.Gemma2Config(
            **b, head_dim=12, rms_norm_eps=1e-5, query_pre_attn_scalar=20 if variant == 0 else 12,
            attn_logit_softcapping=4.0 + variant, final_logit_softcapping=3.0, sliding_window=w,
            layer_types=_sliding(3, variant == 1), hidden_activation="gelu_pytorch_tanh")
    if family == "gemma3":
        full = {"rope_type": "linear", "factor": 2.0, "rope_theta": 100000.0} if variant == 0 else \
            {"rope_type": "default", "rope_theta": 50000.0}
        return tf.Gemma3ForCausalLM, tf.Gemma3TextConfig(
            **b, head_dim=16, rms_norm_eps=1e-5, query_pre_attn_scalar=24, sliding_window=w,
            layer_types=_sliding(3, variant == 1), attn_logit_softcapping=6.0 if variant == 0 else None,
            final_logit_softcapping=5.0 if variant == 1 else None,
            rope_parameters={"full_attention": full, "sliding_attention": {"rope_type": "default", "rope_theta": 1000.0}})
    if family == "phi":
        b.pop("num_key_value_heads")
        return tf.PhiForCausalLM, tf.PhiConfig(**b, num_key_value_heads=4, partial_rotary_factor=0.5,
                                               qk_layernorm=variant == 1, hidden_act="gelu_new", layer_norm_eps=1e-5)
    if family == "phi3":
        rot = 6 if variant == 0 else 8          # head_dim 8: Phi-4-mini style partial rotary, then full
        g = torch.Generator().manual_seed(variant)
        rope = {"rope_type": "longrope", "rope_theta": 10000.0, "original_max_position_embeddings": 16,
                "short_factor": (1 + torch.rand(rot // 2, generator=g)).tolist(),
                "long_factor": (1 + 4 * torch.rand(rot // 2, generator=g)).tolist(),
                "partial_rotary_factor": rot / 8}
        return tf.Phi3ForCausalLM, tf.Phi3Config(**b, rms_norm_eps=1e-5, rope_parameters=rope,
                                                 original_max_position_embeddings=16,
                                                 sliding_window=w if variant == 1 else None, pad_token_id=0)
    if family == "gpt2":
        return tf.GPT2LMHeadModel, tf.GPT2Config(vocab_size=96, n_embd=32, n_layer=2 + variant, n_head=4,
                                                 n_positions=128, n_inner=None if variant == 0 else 48,
                                                 bos_token_id=1, eos_token_id=2, activation_function="gelu_new")
    if family == "smollm3":
        return tf.SmolLM3ForCausalLM, tf.SmolLM3Config(**b, rms_norm_eps=1e-5, no_rope_layers=[1, 0, 1] if variant == 0
                                                       else [0, 1, 1], use_sliding_window=True, sliding_window=w,
                                                       layer_types=_sliding(3, variant == 1), pad_token_id=0)
    if family == "olmo2":
        return tf.Olmo2ForCausalLM, tf.Olmo2Config(**b, rms_norm_eps=1e-5, pad_token_id=0)
    if family == "granite":
        return tf.GraniteForCausalLM, tf.GraniteConfig(**b, rms_norm_eps=1e-5, embedding_multiplier=6.0 + variant,
                                                       attention_multiplier=0.2, residual_multiplier=0.4,
                                                       logits_scaling=3.0 + variant)
    if family == "mixtral":   # 4 experts top-2 (GQA, tied) / 8 experts top-3 with a sliding window (MHA)
        return tf.MixtralForCausalLM, tf.MixtralConfig(**b, rms_norm_eps=1e-5, num_local_experts=4 + 4 * variant,
                                                       num_experts_per_tok=2 + variant,
                                                       sliding_window=w if variant == 1 else None)
    if family == "granitemoe":  # 8 experts top-2 / 4 experts top-1 (the renormalized weight is exactly 1)
        return tf.GraniteMoeForCausalLM, tf.GraniteMoeConfig(
            **b, rms_norm_eps=1e-5, num_local_experts=8 - 4 * variant, num_experts_per_tok=2 - variant,
            embedding_multiplier=6.0 + variant, attention_multiplier=0.2, residual_multiplier=0.4,
            logits_scaling=3.0 + variant)
    if family == "qwen2_moe":   # shared expert + sigmoid gate; raw top-k probabilities / renormalized
        return tf.Qwen2MoeForCausalLM, tf.Qwen2MoeConfig(
            **b, rms_norm_eps=1e-5, num_experts=4 + 4 * variant, num_experts_per_tok=2 + variant,
            moe_intermediate_size=24, shared_expert_intermediate_size=48 - 8 * variant, norm_topk_prob=variant == 1,
            qkv_bias=True, use_sliding_window=variant == 1, sliding_window=w, max_window_layers=3)
    raise KeyError(family)


FAMILIES = ("qwen3", "gemma", "gemma2", "gemma3", "phi", "phi3", "gpt2", "smollm3", "olmo2", "granite", "mixtral",
            "granitemoe", "qwen2_moe")


def write_family_model(path: Path, family: str, variant: int = 0, seed: int = 0) -> Path:
    cls, cfg = family_config(family, variant)
    torch.manual_seed(seed)
    model = cls(cfg).eval()
    with torch.no_grad():  # non-trivial norms and biases so parity tests can fail
        for name, p in model.named_parameters():
            if "norm" in name or ".ln_" in name:
                p.copy_((0.0 if family.startswith("gemma") and name.endswith("weight") else 1.0) * (p.dim() == 1)
                        + 0.1 * torch.randn_like(p) if name.endswith("weight") else 0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
            else:  # O(1) activations: HF's 0.02 init would hide a wrong block under the 1e-4 bound
                p.copy_(torch.randn_like(p) / 32 ** 0.5)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    return path
