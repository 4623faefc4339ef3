"""Our encoder reference vs transformers' modeling code (and sentence-transformers' encode)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from slmpack.errors import BadInputError, UnsupportedError
from slmpack.exporter.checkpoint import load_state_dict
from slmpack.exporter.encoder.reference import build_encoder
from slmpack.exporter.encoder.spec import EncoderOutput, Pooling, load_encoder_spec


def _batch(model_dir, texts, max_len=512):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    return tok(texts, padding=True, truncation=True, max_length=max_len, return_tensors="pt")


def _ours(model_dir):
    spec = load_encoder_spec(model_dir)
    return spec, build_encoder(spec, load_state_dict(model_dir))


TEXTS = ["Ok.", "Der schnelle braune Fuchs springt über den faulen Hund.",
         "def add(a: int, b: int) -> int:\n    return a + b", "a " * 300]


@pytest.mark.parametrize("fixture", ["tiny_bert", "tiny_distilbert"])
def test_hidden_states_match_transformers(fixture, request):
    from transformers import AutoModel

    d = request.getfixturevalue(fixture)
    spec, ours = _ours(d)
    assert spec.output is EncoderOutput.LAST_HIDDEN_STATE
    hf = AutoModel.from_pretrained(str(d)).eval()
    b = _batch(d, TEXTS)
    assert b["input_ids"].shape[1] > 256  # the long row really is long
    with torch.no_grad():
        want = hf(**b).last_hidden_state
        got = ours(b["input_ids"], b["attention_mask"], b.get("token_type_ids"))
    valid = b["attention_mask"].bool()
    assert torch.allclose(got[valid], want[valid], atol=2e-5, rtol=1e-5), float((got - want)[valid].abs().max())


@pytest.mark.parametrize("fixture", ["tiny_bert_cls", "tiny_distilbert_cls"])
def test_logits_match_transformers(fixture, request):
    from transformers import AutoModelForSequenceClassification

    d = request.getfixturevalue(fixture)
    spec, ours = _ours(d)
    assert spec.output is EncoderOutput.LOGITS and len(spec.id2label) in (2, 3)
    hf = AutoModelForSequenceClassification.from_pretrained(str(d)).eval()
    b = _batch(d, TEXTS)
    with torch.no_grad():
        want = hf(**b).logits
        got = ours(b["input_ids"], b["attention_mask"], b.get("token_type_ids"))
    assert torch.allclose(got, want, atol=2e-5, rtol=1e-5), float((got - want).abs().max())


@pytest.mark.parametrize("pooling", ["mean", "cls", "max"])
def test_pooled_embedding_matches_sentence_transformers(pooling, minilm_st, tmp_path):
    from sentence_transformers import SentenceTransformer

    from tests.encoders.conftest import write_sentence_transformers_layout

    d = tmp_path / "st"
    d.mkdir()
    for f in minilm_st.iterdir():
        if f.is_file():
            (d / f.name).write_bytes(f.read_bytes())
    write_sentence_transformers_layout(d, pooling=pooling, normalize=pooling != "max")
    spec, ours = _ours(d)
    assert spec.sentence.pooling is Pooling(pooling) and spec.sentence.normalize is (pooling != "max")
    assert spec.output is EncoderOutput.SENTENCE_EMBEDDING and spec.max_sequence == 256
    st = SentenceTransformer(str(d), device="cpu", local_files_only=True)
    want = st.encode(TEXTS, convert_to_numpy=True, batch_size=8)
    b = _batch(d, TEXTS, max_len=256)
    with torch.no_grad():
        got = ours(b["input_ids"], b["attention_mask"], b["token_type_ids"]).numpy()
    cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cos.min() >= 0.99999, cos
    assert np.abs(got - want).max() < 1e-4


def test_weights_mismatch_is_typed(tiny_bert, tmp_path):
    spec = load_encoder_spec(tiny_bert)
    state = load_state_dict(tiny_bert)
    state.pop("encoder.layer.0.attention.self.query.weight")
    with pytest.raises(BadInputError) as e:
        build_encoder(spec, state)
    assert e.value.code == "E_WEIGHTS_MISMATCH"


def test_unknown_pooling_and_escape_refused(minilm_st, tmp_path):
    import json
    import shutil

    d = tmp_path / "bad"
    shutil.copytree(minilm_st, d)
    cfg = json.loads((d / "1_Pooling" / "config.json").read_text())
    cfg["pooling_mode_weightedmean_tokens"] = True
    (d / "1_Pooling" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedError) as e:
        load_encoder_spec(d)
    assert e.value.code == "E_POOLING_UNSUPPORTED"
    mods = json.loads((d / "modules.json").read_text())
    mods[1]["path"] = "../../etc"
    (d / "modules.json").write_text(json.dumps(mods))
    with pytest.raises(BadInputError) as e:
        load_encoder_spec(d)
    assert e.value.code == "E_PATH_ESCAPE"
