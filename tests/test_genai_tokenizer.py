"""onnxruntime-genai skips a Digits pre-tokenizer (SmolLM / SmolLM2, llama.cpp's `smollm`): the ONNX
package carries the equivalent two-Split form, and genai's own tokenizer then gives the source
tokenizer's ids on the whole parity corpus."""
from __future__ import annotations

import json
import shutil

import pytest

from slmpack import api
from slmpack.targets.onnx.genai_tokenizer import genai_form
from slmpack.tokenizer_parity import corpus_lines
from tests.targets.test_executorch import CFG, write_model

DIGITS_FIRST = {"type": "Sequence", "pretokenizers": [
    {"type": "Digits", "individual_digits": True},
    {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]}


def test_only_digits_then_bytelevel_is_rewritten():
    new = genai_form({"pre_tokenizer": DIGITS_FIRST, "model": {}})
    steps = new["pre_tokenizer"]["pretokenizers"]
    assert [s["type"] for s in steps] == ["Split", "Split", "ByteLevel"] and steps[2]["use_regex"] is False
    assert steps[0]["pattern"] == {"Regex": r"\p{N}"} and new["model"] == {}
    assert genai_form({"pre_tokenizer": DIGITS_FIRST["pretokenizers"][1]}) is None      # plain GPT-2
    grouped = {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": False},
                                                     DIGITS_FIRST["pretokenizers"][1]]}
    assert genai_form({"pre_tokenizer": grouped}) is None                                # other semantics


@pytest.fixture(scope="module")
def smollm_style_package(tmp_path_factory):
    d = tmp_path_factory.mktemp("genai-tok")
    model = write_model(d / "model", layers=1)
    tok = json.loads((model / "tokenizer.json").read_text())
    tok["pre_tokenizer"] = DIGITS_FIRST
    (model / "tokenizer.json").write_text(json.dumps(tok))
    return model, api.export(model, "onnx", d / "onnx", CFG)


def test_genai_gives_the_source_ids_on_the_corpus(smollm_style_package, tmp_path):
    import onnxruntime_genai as og
    from tokenizers import Tokenizer

    model, pkg = smollm_style_package
    assert pkg.passed, pkg.validation
    assert "Split(digit)" in pkg.manifest["report"]["genai_tokenizer"]
    cert = pkg.validation["tokenizer_parity"]["runtimes"]["onnxruntime-genai"]
    assert cert["lines"] >= 2000 and cert["mismatches"] == 0, cert
    source = Tokenizer.from_file(str(model / "tokenizer.json"))     # the checkpoint's own file
    lines = [s for s in corpus_lines() if s]
    ours = og.Tokenizer(og.Model(str(pkg.path)))
    assert all(list(ours.encode(s)) == source.encode(s, add_special_tokens=False).ids for s in lines)
    # the file as the checkpoint wrote it: genai drops the digit split (the test can fail)
    raw = tmp_path / "raw"
    shutil.copytree(pkg.path, raw)
    shutil.copy(model / "tokenizer.json", raw / "tokenizer.json")
    theirs = og.Tokenizer(og.Model(str(raw)))
    bad = [s for s in lines if list(theirs.encode(s)) != source.encode(s, add_special_tokens=False).ids]
    assert len(bad) > 100 and list(theirs.encode("x123")) != source.encode("x123").ids
