"""Tokenizer parity certificate: each runtime's own tokenizer vs Hugging Face's, on the 2,400-line
corpus, for byte-level BPE, Unigram with byte fallback and WordPiece."""
from __future__ import annotations

import shutil

import pytest

from slmpack import api
from slmpack.config import ExportConfig, TraceConfig, ValidationConfig
from slmpack import tokenizer_parity as tp
from tests.tiny_models import write_tiny_model
from tests.tokenizer_kinds import KINDS, write_tokenizer

CFG = ExportConfig(trace=TraceConfig(max_context=64, max_prompt=16),
                   validation=ValidationConfig(heldout_tokens=32, greedy_tokens=4))


def test_corpus_is_large_and_covers_every_kind():
    lines = tp.corpus_lines()
    assert len(lines) >= 2000
    text = "\n".join(lines)
    for probe in ("def ", "你好", "👨‍👩‍👧‍👦", "שלום", "مرحبا", "e\u0301", "\t", "\u3000", "<|endoftext|>", "[CLS]"):
        assert probe in text, probe
    assert any(ln != ln.strip() for ln in lines)          # whitespace runs survive reading


@pytest.fixture(scope="module")
def onnx_pkg(tmp_path_factory):
    model = write_tokenizer("byte_level_bpe", write_tiny_model(tmp_path_factory.mktemp("tp") / "m", "llama",
                                                                vocab=4096, hidden=32))
    return api.export(model, "onnx", tmp_path_factory.mktemp("tp_onnx") / "pkg", CFG)


def _hf(path):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path / "tokenizer.json"))


# What each runtime's own tokenizer does with each kind, measured (2026-12-02, onnxruntime-genai
# 0.18.0, pytorch-tokenizers 1.5.0 from executorch 1.5.1): None = every line's ids and decode equal HF's;
# "decode" = every id equal, the decode differs (ort-genai keeps the leading space that Llama-2's
# Strip decoder removes); "load" = the runtime refuses the tokenizer.json.
EXPECTED = {
    "byte_level_bpe": {"onnxruntime-genai": None, "executorch": None},
    "sentencepiece_bpe_byte_fallback": {"onnxruntime-genai": "decode", "executorch": None},
    "unigram_byte_fallback": {"onnxruntime-genai": "load", "executorch": "load"},
    "wordpiece": {"onnxruntime-genai": "load", "executorch": "load"},
}


def _kind_of(p: tp.Parity) -> str | None:
    if p.passed:
        return None
    return "load" if p.detail.startswith("runtime cannot load") else p.detail.split(" ", 1)[0]


@pytest.mark.parametrize("kind", KINDS)
def test_onnxruntime_genai_and_executorch_tokenizers_vs_hf(kind, onnx_pkg, tmp_path):
    pkg = tmp_path / "pkg"
    shutil.copytree(onnx_pkg.path, pkg)
    write_tokenizer(kind, pkg)
    got = {**tp.certify("onnx", pkg, {}), **tp.certify("executorch", pkg, {})}
    assert {k: _kind_of(p) for k, p in got.items()} == EXPECTED[kind], {k: p.detail for k, p in got.items()}
    for p in got.values():
        assert p.lines == len(tp.corpus_lines())
        assert (p.mismatches == 0) == (p.first_mismatch is None)
    if EXPECTED[kind]["onnxruntime-genai"] == "decode":   # ids all equal, only the decoded text differs
        ort = got["onnxruntime-genai"]
        assert ort.mismatches == ort.lines and ort.detail.startswith("decode ' ")


def test_a_different_tokenizer_is_caught_with_its_line(onnx_pkg, tmp_path):
    """The runtime's tokenizer is a SentencePiece-style one, the HF oracle the byte-level BPE: mismatch, named."""
    pkg = tmp_path / "pkg"
    shutil.copytree(onnx_pkg.path, pkg)
    oracle = _hf(write_tokenizer("byte_level_bpe", tmp_path))
    write_tokenizer("sentencepiece_bpe_byte_fallback", pkg)
    r = tp.compare("onnxruntime-genai", *tp.ort_genai(pkg), oracle, tp.corpus_lines(), skip_special=True)
    assert r.mismatches > 1000 and r.first_mismatch == 1 and r.detail.startswith("ids ")


def test_manifest_records_parity_and_the_ladder_requires_it(onnx_pkg):
    v = onnx_pkg.manifest["validation"]["tokenizer_parity"]
    assert v["passed"] and v["runtimes"]["onnxruntime-genai"]["lines"] == len(tp.corpus_lines())
    assert v["runtimes"]["onnxruntime-genai"]["mismatches"] == 0 and v["not_checked"] == {}


@pytest.fixture(scope="module")
def tflite_pkg(tmp_path_factory):
    model = write_tiny_model(tmp_path_factory.mktemp("tpl") / "m", "llama", vocab=4096, hidden=32)
    write_tokenizer("byte_level_bpe", model)
    return model, api.export(model, "tflite", tmp_path_factory.mktemp("tpl_pkg") / "pkg",
                             ExportConfig(trace=CFG.trace, validation=CFG.validation))


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_litert_lm_tokenizer_matches_hf(kind, tflite_pkg, tmp_path):
    """LiteRT-LM's own tokenizer (the one inside the .litertlm bundle) on every kind: the export's
    certificate for byte-level BPE, then the same .tflite re-bundled with each other kind's tokenizer."""
    from slmpack.exporter.spec import load_spec
    from slmpack.targets.tflite.litertlm import build_bundle

    model, tflite_pkg = tflite_pkg
    ladder = tflite_pkg.manifest["validation"]["tokenizer_parity"]
    assert ladder["passed"] and ladder["runtimes"]["litert-lm"]["mismatches"] == 0
    pkg = tmp_path / "pkg"
    shutil.copytree(tflite_pkg.path, pkg)
    write_tokenizer(kind, pkg)
    bundle = tflite_pkg.manifest["runtime"]["litert_lm"]["file"]
    (pkg / bundle).unlink()
    build_bundle(pkg, tflite_pkg.manifest["artifact"], pkg / "tokenizer.json", load_spec(model),
                 {"eos_token_id": 0}, CFG.trace.max_context)
    got = tp.certify("tflite", pkg, tflite_pkg.manifest)["litert-lm"]
    assert got.lines == len(tp.corpus_lines())
    assert (got.mismatches, got.first_mismatch, got.detail) == (0, None, None), got.to_json()
