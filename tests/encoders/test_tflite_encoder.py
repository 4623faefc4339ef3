"""LiteRT encoder packages: fixed-length signatures, the runtime pads + masks; ladder and labels."""
from __future__ import annotations

import pytest

import slmpack

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("fixture", ["tiny_distilbert_cls", "tiny_bert", "minilm_st"])
def test_tflite_encoder_package(fixture, request, tmp_path):
    pkg = slmpack.export(request.getfixturevalue(fixture), target="tflite", out=tmp_path / "pkg")
    assert pkg.passed, pkg.validation
    # signatures up to the encoder's max_sequence (sentence-transformers' max_seq_length 256 for MiniLM)
    assert pkg.manifest["io"]["lengths"] == ([32, 128, 256] if fixture == "minilm_st" else [32, 128, 256, 512])
    h = pkg.validation["heldout"]
    if pkg.manifest["encoder"]["output"] == "logits":
        assert h["label_agreement"] == 1.0
    else:
        assert h["min_cosine"] >= 0.99999
        if pkg.manifest["encoder"]["output"] == "sentence_embedding":
            assert h["top5_agreement"] >= 0.95
