"""Fixtures for the quantization pipeline tests: a tiny tied GQA Llama whose dimensions fit the
int4 g32 presets (hidden 64, MLP 128), with a character-level tokenizer so the bundled
calibration and held-out texts tokenize to real ids."""
from __future__ import annotations

import json
import string
from pathlib import Path

import pytest
import torch

from tests.tiny_models import one_torch_thread, redraw


_one_thread = pytest.fixture(autouse=True, name="_one_thread")(one_torch_thread)


def write_char_tokenizer(d: Path) -> int:
    from tokenizers import Regex, Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Split

    chars = ["<unk>", "</s>"] + sorted(set(string.printable) - {"\x0b", "\x0c"})
    tok = Tokenizer(WordLevel({c: i for i, c in enumerate(chars)}, unk_token="<unk>"))
    tok.pre_tokenizer = Split(Regex("."), behavior="isolated")
    tok.save(str(d / "tokenizer.json"))
    (d / "tokenizer_config.json").write_text(json.dumps({"eos_token": "</s>", "unk_token": "<unk>"}))
    return len(chars)


def write_quant_model(path: Path, seed: int = 0) -> Path:
    import transformers as tf

    path.mkdir(parents=True, exist_ok=True)
    n_tokens = write_char_tokenizer(path)
    cfg = tf.LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         tie_word_embeddings=True, bos_token_id=1, eos_token_id=1, rms_norm_eps=1e-5)
    assert n_tokens <= cfg.vocab_size
    torch.manual_seed(seed)
    model = tf.LlamaForCausalLM(cfg).eval()
    redraw(model, rest=lambda p: 5.0 * p)  # sharper logits: top-1 comparisons are not all ties
    model.save_pretrained(path, safe_serialization=True)
    (path / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 1}))
    return path


@pytest.fixture(scope="session")
def quant_model(tmp_path_factory) -> Path:
    return write_quant_model(tmp_path_factory.mktemp("qmodel") / "tiny")
