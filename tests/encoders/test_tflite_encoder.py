"""LiteRT encoder packages: fixed-length signatures, the runtime pads + masks; ladder and labels."""
from __future__ import annotations

import pytest

import slmpack

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("fixture", ["tiny_distilbert_cls", "tiny_bert"])
def test_tflite_encoder_package(fixture, request, tmp_path):
    pkg = slmpack.export(request.getfixturevalue(fixture), target="tflite", out=tmp_path / "pkg")
    assert pkg.passed, pkg.validation
    assert pkg.manifest["io"]["lengths"] == [32, 128, 256, 512]
    h = pkg.validation["heldout"]
    if pkg.manifest["encoder"]["output"] == "logits":
        assert h["label_agreement"] == 1.0
    else:
        assert h["min_cosine"] >= 0.99999
