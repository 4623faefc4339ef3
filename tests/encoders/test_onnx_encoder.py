"""ONNX encoder packages: export + ladder on the fixtures, fusions counted, plain onnxruntime + the
package's tokenizer equals sentence-transformers' encode, classification labels, CLI summary."""
from __future__ import annotations

import json

import numpy as np
import pytest

import slmpack
from slmpack.runtime.encoder import open_encoder


@pytest.fixture(scope="module")
def minilm_pkg(minilm_st, tmp_path_factory):
    return slmpack.export(minilm_st, target="onnx", out=tmp_path_factory.mktemp("pkgs") / "minilm")


def test_minilm_package_passes_ladder(minilm_pkg):
    m = minilm_pkg.manifest
    assert minilm_pkg.passed, m["validation"]
    h = m["validation"]["heldout"]
    assert h["sentences"] >= 200 and h["min_cosine"] >= 0.99999 and h["top5_agreement"] >= 0.95
    assert m["encoder"] == {"output": "sentence_embedding", "inputs": ["input_ids", "attention_mask", "token_type_ids"],
                            "max_sequence": 256, "max_batch": 1024, "id2label": [], "pooling": "mean", "normalize": True}
    f = m["report"]["fusions"]
    assert m["report"]["attention_blocks_fused"] == "6/6"
    assert f["SkipLayerNormalization"] >= 12 and f["BiasGelu"] + f["FastGelu"] + f["Gelu"] == 6
    assert {"modules.json", "1_Pooling/config.json", "tokenizer.json"} <= set(m["files"])
    out = {o["name"]: o["shape"] for o in m["io"]["outputs"]}
    assert out == {"sentence_embedding": ["batch_size", 384]}


def test_plain_onnxruntime_equals_sentence_transformers(minilm_pkg, minilm_st, sentences):
    """No slmpack at run time: onnxruntime + tokenizers on the package files vs ST's encode."""
    import onnxruntime as ort
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(minilm_pkg.path / "tokenizer.json"))
    tok.enable_truncation(max_length=256)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    sess = ort.InferenceSession(str(minilm_pkg.path / "model.onnx"), providers=["CPUExecutionProvider"])
    texts = sentences[::4]
    encs = tok.encode_batch(texts)
    feeds = {"input_ids": np.array([e.ids for e in encs], np.int64),
             "attention_mask": np.array([e.attention_mask for e in encs], np.int64),
             "token_type_ids": np.array([e.type_ids for e in encs], np.int64)}
    assert feeds["input_ids"].shape[1] == 256  # some rows hit the truncation length
    got = sess.run(None, feeds)[0]
    want = SentenceTransformer(str(minilm_st), device="cpu", local_files_only=True).encode(texts, batch_size=16)
    cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cos.min() >= 0.99999, cos.min()
    emb = open_encoder(minilm_pkg.path).embed(texts)  # the runtime kit gives the same vectors
    assert np.abs(emb - got).max() < 1e-4


@pytest.mark.parametrize("fixture", ["tiny_bert_cls", "tiny_distilbert_cls"])
def test_classification_packages(fixture, request, tmp_path, sentences):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    import torch

    d = request.getfixturevalue(fixture)
    pkg = slmpack.export(d, target="onnx", out=tmp_path / "pkg")
    assert pkg.passed, pkg.validation
    assert pkg.validation["heldout"]["label_agreement"] == 1.0
    labels = open_encoder(pkg.path).classify(sentences[:40])
    hf = AutoModelForSequenceClassification.from_pretrained(str(d)).eval()
    tok = AutoTokenizer.from_pretrained(str(d))
    with torch.no_grad():
        b = tok(sentences[:40], padding=True, truncation=True, max_length=512, return_tensors="pt")
        want = [hf.config.id2label[int(i)] for i in hf(**b).logits.argmax(-1)]
    assert labels == want
    assert len(set(want)) > 1  # the head really separates sentences


@pytest.mark.parametrize("fixture", ["tiny_bert", "tiny_distilbert"])
def test_hidden_state_packages(fixture, request, tmp_path):
    d = request.getfixturevalue(fixture)
    pkg = slmpack.export(d, target="onnx", out=tmp_path / "pkg")
    assert pkg.passed, pkg.validation
    assert pkg.manifest["encoder"]["output"] == "last_hidden_state"
    assert ("token_type_ids" in pkg.manifest["encoder"]["inputs"]) is (fixture == "tiny_bert")
    assert pkg.validation["heldout"]["min_cosine"] >= 0.99999


def test_cli_shows_encoder_metrics(tiny_distilbert_cls, tmp_path, capsys):
    from slmpack.cli import main

    assert main(["export", str(tiny_distilbert_cls), "--target", "onnx", "--out", str(tmp_path / "p")]) == 0
    text = capsys.readouterr().out
    assert "encoders" in text and "logits" in text and "PASS" in text
    assert main(["export", str(tiny_distilbert_cls), "--target", "onnx", "--out", str(tmp_path / "q"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["packages"][0]["validation"]["heldout"]["label_agreement"] == 1.0


def test_slmpack_load_opens_an_encoder_package(minilm_pkg, minilm_st, sentences, tmp_path):
    """``slmpack.load`` verifies an encoder package against its typed manifest and embeds with it;
    a changed file or a manifest naming a file outside ``files`` is refused."""
    import shutil

    from sentence_transformers import SentenceTransformer

    from slmpack.errors import BadInputError, PackageIntegrityError
    from slmpack.runtime.encoder_manifest import EncoderManifest

    pkg = slmpack.load(minilm_pkg.path)
    doc = json.loads((minilm_pkg.path / "manifest.json").read_text())
    assert EncoderManifest.from_json(doc).to_json() == doc      # the record keeps the whole document
    assert pkg.identity.startswith("sha256:") and pkg.output == "sentence_embedding"
    texts = sentences[1::7]
    want = SentenceTransformer(str(minilm_st), device="cpu", local_files_only=True).encode(texts, batch_size=16)
    got = pkg.embed(texts)
    cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cos.min() >= 0.99999, cos.min()

    bad = tmp_path / "tampered"
    shutil.copytree(minilm_pkg.path, bad)
    (bad / "tokenizer.json").write_text((bad / "tokenizer.json").read_text().replace("[UNK]", "[UNQ]", 1))
    with pytest.raises(PackageIntegrityError):
        slmpack.load(bad)
    outside = tmp_path / "outside"
    shutil.copytree(minilm_pkg.path, outside)
    (outside / "manifest.json").write_text(json.dumps({**doc, "artifact": "../model.onnx"}))
    with pytest.raises(BadInputError) as e:
        slmpack.load(outside)
    assert e.value.code == "E_MANIFEST_INVALID"
