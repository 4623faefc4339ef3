"""Shared fixtures for the calibration tests: a tiny random Llama behind the model contract
(``model(ids[1, T]) -> logits[1, T, V]`` with HF Llama module names), a tiny tokenizer dir."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from tests.tiny_models import one_torch_thread


_one_thread = pytest.fixture(autouse=True, name="_one_thread")(one_torch_thread)


class LlamaAdapter(nn.Module):
    """Exposes ``model.*`` / ``lm_head`` at the top level and returns plain logits."""

    def __init__(self, hf):
        super().__init__()
        self.model = hf.model
        self.lm_head = hf.lm_head
        self._hf = [hf]  # not registered: keeps module names HF-shaped

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self._hf[0](ids).logits


def make_tiny_llama(*, tie: bool = False, kv_heads: int = 4, layers: int = 2, hidden: int = 64,
                    intermediate: int = 128, vocab: int = 128, seed: int = 0) -> LlamaAdapter:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate,
                      num_hidden_layers=layers, num_attention_heads=4,
                      num_key_value_heads=kv_heads, max_position_embeddings=256,
                      tie_word_embeddings=tie, attn_implementation="eager")
    torch.manual_seed(seed)
    hf = LlamaForCausalLM(cfg).eval()
    # random-init norms are all ones; perturb them so folds are exercised for real
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "norm" in name:
                p.mul_(1.0 + 0.5 * torch.rand_like(p))
    return LlamaAdapter(hf)


@pytest.fixture
def make_llama():
    return make_tiny_llama


@pytest.fixture
def windows():
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 128, (4, 32), generator=g)


@pytest.fixture
def tokenizer_dir(tmp_path):
    """A model dir with a whitespace word-level tokenizer.json and config.json (eos id 1)."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    words = ["<unk>", "</s>"] + [f"w{i}" for i in range(50)] + ["hello", "world", "é"]
    tok = Tokenizer(WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = Whitespace()
    d = tmp_path / "model"
    d.mkdir()
    tok.save(str(d / "tokenizer.json"))
    (d / "config.json").write_text(json.dumps({"eos_token_id": 1}))
    return d
