"""ExecuTorch encoder packages (XNNPACK): ladder, delegation reported, classification labels."""
from __future__ import annotations

import pytest

import slmpack
from slmpack.runtime.encoder import open_encoder

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("fixture", ["tiny_bert_cls", "tiny_distilbert", "minilm_st"])
def test_executorch_encoder_package(fixture, request, tmp_path, sentences):
    pkg = slmpack.export(request.getfixturevalue(fixture), target="executorch", out=tmp_path / "pkg")
    assert pkg.passed, pkg.validation
    rep = pkg.manifest["report"]["delegation"]
    assert rep["xnnpack_partitions"] >= 1 and rep["delegated_op_count"] > 0
    lengths = [32, 128, 256] if fixture == "minilm_st" else [32, 128, 256, 512]   # up to max_sequence
    assert pkg.manifest["io"]["methods"] == [f"encode_{n}" for n in lengths]
    h = pkg.validation["heldout"]
    if pkg.manifest["encoder"]["output"] == "logits":
        assert h["label_agreement"] == 1.0
        labels = open_encoder(pkg.path).classify(sentences[:50])
        assert len(set(labels)) > 1 and set(labels) <= set(pkg.manifest["encoder"]["id2label"])
    else:
        assert h["min_cosine"] >= 0.99999
        if pkg.manifest["encoder"]["output"] == "sentence_embedding":
            assert h["top5_agreement"] >= 0.95

