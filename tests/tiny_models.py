"""Tiny random Hugging Face checkpoints written to disk, for tests (no hub, no network)."""
from __future__ import annotations

from pathlib import Path

import torch

FAMILIES = ("llama", "mistral", "qwen2")


def hf_config(family: str, *, gqa: bool = True, tied: bool = True, rope: dict | None = None,
              vocab: int = 96, hidden: int = 32, layers: int = 2, heads: int = 4, max_pos: int = 128):
    import transformers as tf

    cls = {"llama": tf.LlamaConfig, "mistral": tf.MistralConfig, "qwen2": tf.Qwen2Config}[family]
    kw = dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=hidden * 2 + 8,
              num_hidden_layers=layers, num_attention_heads=heads,
              num_key_value_heads=heads // 2 if gqa else heads, max_position_embeddings=max_pos,
              tie_word_embeddings=tied, bos_token_id=1, eos_token_id=2, rms_norm_eps=1e-5)
    if rope:
        kw["rope_parameters"] = {"rope_theta": 10000.0, **rope}
    if family == "mistral":
        kw["sliding_window"] = None
    return cls(**kw)


def write_tiny_model(path: Path, family: str = "llama", seed: int = 0, **kw) -> Path:
    import transformers as tf

    cfg = hf_config(family, **kw)
    cls = {"llama": tf.LlamaForCausalLM, "mistral": tf.MistralForCausalLM, "qwen2": tf.Qwen2ForCausalLM}[family]
    torch.manual_seed(seed)
    model = cls(cfg).eval()
    with torch.no_grad():  # non-trivial norms and biases so parity tests can fail
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    return path
