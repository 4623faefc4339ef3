"""Regression tests for defects 1 (digest side), 8 (failed package left at --out) and 10 (typed
errors for manifests); the corpus (test_corpus.py) covers the input side of defects 1-3, 6-10."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from slmpack.cli import main
from slmpack.exporter.checkpoint import checkpoint_digest
from slmpack.bundled import demo_model_dir
from slmpack.targets.base import Tolerance


def test_checkpoint_digest_covers_tokenizer_and_chat_template(tmp_path):
    model = tmp_path / "m"
    shutil.copytree(demo_model_dir(), model)
    d0 = checkpoint_digest(model)
    cfg = json.loads((model / "tokenizer_config.json").read_text())
    cfg["eos_token"] = "<changed>"
    (model / "tokenizer_config.json").write_text(json.dumps(cfg))
    d1 = checkpoint_digest(model)
    (model / "chat_template.jinja").write_text("{{ messages }}")
    d2 = checkpoint_digest(model)
    assert len({d0, d1, d2}) == 3


@pytest.fixture
def impossible_tolerance(monkeypatch):
    """A zero bound: the real ladder runs, and ORT's fp32 logits differ from eager's by ~1e-7, so it fails."""
    from slmpack.targets.onnx.target import OnnxTarget

    monkeypatch.setattr(OnnxTarget, "tolerance", lambda self, options, plan=None: Tolerance(atol=0.0, rtol=0.0))


def test_failed_validation_leaves_nothing_at_out(tmp_path, tiny_llama, impossible_tolerance, capsys):
    out = tmp_path / "out"
    rc = main(["export", str(tiny_llama), "--target", "onnx", "--out", str(out), "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert (rc, doc["error"]) == (1, "E_VALIDATION")
    assert [n for n in os.listdir(tmp_path) if n != "build.log"] == []  # the run log stays beside --out


def test_failed_validation_is_moved_to_keep_failed(tmp_path, tiny_llama, impossible_tolerance, capsys):
    out, kept = tmp_path / "out", tmp_path / "kept"
    rc = main(["export", str(tiny_llama), "--target", "onnx", "--out", str(out), "--keep-failed", str(kept)])
    assert rc == 1 and not out.exists()
    assert main(["verify", str(kept)]) == 0  # the kept package is whole
    manifest = json.loads((kept / "manifest.json").read_text())
    assert manifest["validation"]["passed"] is False
    assert sorted(n for n in os.listdir(tmp_path) if n != "build.log") == ["kept"]
