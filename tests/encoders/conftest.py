"""Encoder fixtures: random tiny BERT / DistilBERT checkpoints (base + classification head) and a
MiniLM-shaped sentence-transformers directory (6 layers, hidden 384, mean pooling, Normalize), all
with a small WordPiece tokenizer trained here on the held-out sentences (fast tests)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from slmpack.exporter.encoder.sentences import load_sentences

VOCAB = 384


def wordpiece_tokenizer(path: Path):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(load_sentences()[0], trainers.WordPieceTrainer(vocab_size=VOCAB, special_tokens=specials))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    fast = BertTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                             sep_token="[SEP]", mask_token="[MASK]", model_max_length=512)
    fast.save_pretrained(str(path))
    return fast


def _save(model, path: Path, tokenizer_dir: Path) -> Path:
    torch.manual_seed(0)
    model.save_pretrained(str(path), safe_serialization=True)
    for f in tokenizer_dir.iterdir():
        (path / f.name).write_bytes(f.read_bytes())
    return path


def _init(model, seed: int):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if "LayerNorm" in name or "layer_norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g) if name.endswith("weight")
                        else 0.1 * torch.randn(p.shape, generator=g))
            elif name.startswith(("classifier", "pre_classifier", "bert.pooler")):  # heads that separate
                p.copy_((0.5 if name.endswith("weight") else 0.0) * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


def _center_head(model, tokenizer_dir: Path):
    """Random heads predict one label everywhere: shift the classifier bias by the mean logit over
    the held-out sentences so several labels occur (a test that can fail)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    b = tok(load_sentences()[0][:64], padding=True, truncation=True, max_length=512, return_tensors="pt")
    b.pop("token_type_ids") if "distil" in type(model).__name__.lower() else None
    with torch.no_grad():
        model.classifier.bias -= model(**b).logits.mean(0)
    return model


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("wordpiece")
    wordpiece_tokenizer(d)
    return d


def bert_config(**kw):
    from transformers import BertConfig

    base = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=64, max_position_embeddings=512, type_vocab_size=2)
    return BertConfig(**{**base, **kw})


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory, tokenizer_dir) -> Path:
    from transformers import BertModel

    return _save(_init(BertModel(bert_config(), add_pooling_layer=False), 1), tmp_path_factory.mktemp("bert"),
                 tokenizer_dir)


@pytest.fixture(scope="session")
def tiny_bert_cls(tmp_path_factory, tokenizer_dir) -> Path:
    from transformers import BertForSequenceClassification

    cfg = bert_config(num_labels=3, id2label={0: "neg", 1: "neu", 2: "pos"}, label2id={"neg": 0, "neu": 1, "pos": 2})
    return _save(_center_head(_init(BertForSequenceClassification(cfg), 2), tokenizer_dir), tmp_path_factory.mktemp("bert_cls"), tokenizer_dir)


def distil_config(**kw):
    from transformers import DistilBertConfig

    base = dict(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=512)
    return DistilBertConfig(**{**base, **kw})


@pytest.fixture(scope="session")
def tiny_distilbert(tmp_path_factory, tokenizer_dir) -> Path:
    from transformers import DistilBertModel

    return _save(_init(DistilBertModel(distil_config()), 3), tmp_path_factory.mktemp("distil"), tokenizer_dir)


@pytest.fixture(scope="session")
def tiny_distilbert_cls(tmp_path_factory, tokenizer_dir) -> Path:
    from transformers import DistilBertForSequenceClassification

    cfg = distil_config(num_labels=2, id2label={0: "NEGATIVE", 1: "POSITIVE"},
                        label2id={"NEGATIVE": 0, "POSITIVE": 1})
    return _save(_center_head(_init(DistilBertForSequenceClassification(cfg), 4), tokenizer_dir), tmp_path_factory.mktemp("distil_cls"),
                 tokenizer_dir)


def write_sentence_transformers_layout(d: Path, pooling: str = "mean", normalize: bool = True,
                                       max_seq_length: int = 256, dim: int = 384) -> None:
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        (d / "2_Normalize").mkdir(exist_ok=True)
    (d / "modules.json").write_text(json.dumps(modules, indent=2))
    (d / "1_Pooling").mkdir(exist_ok=True)
    modes = {f"pooling_mode_{k}": pooling == v for k, v in
             (("mean_tokens", "mean"), ("cls_token", "cls"), ("max_tokens", "max"))}
    (d / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": dim, "pooling_mode_mean_sqrt_len_tokens": False,
         "pooling_mode_weightedmean_tokens": False, "pooling_mode_lasttoken": False, **modes}, indent=2))
    (d / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length,
                                                             "do_lower_case": False}))


@pytest.fixture(scope="session")
def minilm_st(tmp_path_factory, tokenizer_dir) -> Path:
    """MiniLM-L6-shaped (all-MiniLM-L6-v2 geometry, random weights, small vocab) sentence-transformers dir."""
    from transformers import BertModel

    cfg = bert_config(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
    d = _save(_init(BertModel(cfg, add_pooling_layer=False), 5), tmp_path_factory.mktemp("minilm"), tokenizer_dir)
    write_sentence_transformers_layout(d)
    return d


@pytest.fixture(scope="session")
def tiny_st(tmp_path_factory, tokenizer_dir) -> Path:
    """A tiny (2 layers, hidden 32) sentence-transformers dir: mean pooling + Normalize in the graph,
    for the slow emulated-device runs where the MiniLM geometry costs minutes."""
    from transformers import BertModel

    d = _save(_init(BertModel(bert_config(), add_pooling_layer=False), 6), tmp_path_factory.mktemp("tiny_st"),
              tokenizer_dir)
    write_sentence_transformers_layout(d, dim=32)
    return d


@pytest.fixture(scope="session")
def sentences() -> list[str]:
    return load_sentences()[0]
