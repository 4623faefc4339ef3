"""Core ML encoder packages (flexible batch and sequence, fp32), run by the MIL interpreter on Linux:
ladder, I/O, fused attention, transformers' labels, and sentence-transformers' encode for MiniLM."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

import slmpack
from slmpack.runtime.encoder import open_encoder
from tests.encoders.conftest import write_sentence_transformers_layout

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_bert_max(tiny_bert, tmp_path_factory):
    """tiny BERT as a sentence-transformers dir with max pooling and no Normalize (the other pooling path)."""
    d = tmp_path_factory.mktemp("bert_max")
    shutil.copytree(tiny_bert, d, dirs_exist_ok=True)
    write_sentence_transformers_layout(d, pooling="max", normalize=False, dim=32)
    return d


def _labels_of_transformers(d, texts):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    hf = AutoModelForSequenceClassification.from_pretrained(str(d)).eval()
    tok = AutoTokenizer.from_pretrained(str(d))
    with torch.no_grad():
        b = tok(texts, padding=True, truncation=True, max_length=512, return_tensors="pt")
        return [hf.config.id2label[int(i)] for i in hf(**b).logits.argmax(-1)]


@pytest.mark.parametrize("fixture", ["tiny_bert_cls", "tiny_distilbert", "tiny_bert_max"])
def test_coreml_encoder_package(fixture, request, tmp_path, sentences):
    d = request.getfixturevalue(fixture)
    pkg = slmpack.export(d, target="coreml", out=tmp_path / "pkg")
    assert pkg.passed, pkg.validation
    m = pkg.manifest
    assert m["runtime"]["compute_precision"] == "fp32" and m["runtime"]["deployment_target"] == "ios18"
    assert m["report"]["attention_blocks_fused"] == "2/2"
    flexible = ["batch[1..64]", f"sequence[2..{m['encoder']['max_sequence']}]"]
    assert [i["shape"] for i in m["io"]["inputs"]] == [flexible] * len(m["encoder"]["inputs"])
    assert {i["dtype"] for i in m["io"]["inputs"]} == {"int32"}
    out = m["io"]["outputs"]
    h = pkg.validation["heldout"]
    if m["encoder"]["output"] == "logits":
        assert out == [{"name": "logits", "dtype": "float32", "shape": ["batch[1..64]", 3]}]
        assert h["label_agreement"] == 1.0
        labels = open_encoder(pkg.path).classify(sentences[:40])
        want = _labels_of_transformers(d, sentences[:40])
        assert labels == want and len(set(want)) > 1
    elif m["encoder"]["output"] == "last_hidden_state":
        assert out == [{"name": "last_hidden_state", "dtype": "float32", "shape": [*flexible, 32]}]
        assert h["min_cosine"] >= 0.99999
        # the structural check reads the shapes back from the package: an edited manifest is caught
        from slmpack.targets.coreml.encoder import check_encoder

        assert check_encoder(pkg.path, m) == []
        edited = [{**m["io"]["inputs"][0], "shape": ["batch[1..64]", "sequence[2..1024]"]}, *m["io"]["inputs"][1:]]
        assert any("inputs differ" in p for p in check_encoder(pkg.path, {**m, "io": {**m["io"], "inputs": edited}}))
    else:
        assert m["encoder"]["pooling"] == "max" and not m["encoder"]["normalize"]
        assert out == [{"name": "sentence_embedding", "dtype": "float32", "shape": ["batch[1..64]", 32]}]
        assert h["min_cosine"] >= 0.99999 and h["top5_agreement"] >= 0.95


def test_minilm_coreml_equals_sentence_transformers(minilm_st, tmp_path, sentences):
    from sentence_transformers import SentenceTransformer

    pkg = slmpack.export(minilm_st, target="coreml", out=tmp_path / "pkg")
    assert pkg.passed, pkg.validation
    h = pkg.validation["heldout"]
    assert h["sentences"] >= 200 and h["min_cosine"] >= 0.99999 and h["top5_agreement"] >= 0.95
    assert pkg.manifest["report"]["attention_blocks_fused"] == "6/6"
    texts = sentences[::4]
    got = open_encoder(pkg.path).embed(texts)
    want = SentenceTransformer(str(minilm_st), device="cpu", local_files_only=True).encode(texts, batch_size=16)
    cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cos.min() >= 0.99999, cos.min()
