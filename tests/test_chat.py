"""Chat-ready packages: the chat template and the stop tokens reach every runtime's own chat path.

Oracle: transformers' ``apply_chat_template`` + ``generate`` on the same tiny instruct checkpoint
(random weights, ChatML template in chat_template.jinja, stop tokens [<|endoftext|>, <|im_end|>],
an lm_head row that makes greedy decoding end on <|im_end|> after a few tokens).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from slmpack import api
from slmpack.config import ExportConfig, TraceConfig, ValidationConfig
from slmpack.exporter import chat_template
from slmpack.exporter.inputs import load_tokenizer
from slmpack.exporter.reference_runner import greedy
from slmpack.errors import BadInputError
from slmpack.runtime.chat import render_chat
from tests.chat_models import CHATML, QUESTION, reference_chat_tokens, write_tiny_instruct

CFG = ExportConfig(trace=TraceConfig(max_context=96, max_prompt=48),   # the chat prompt (37) in one chunk
                   validation=ValidationConfig(heldout_tokens=64, greedy_tokens=8))
LLAMA3 = ("{{ bos_token }}{% for m in messages %}{% if loop.index0 == 0 and m['role'] == 'system' %}"
          "{% set content = m['content'] %}{% else %}{% set content = m['content'] | trim %}{% endif %}"
          "<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ content }}<|eot_id|>{% endfor %}"
          "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")


@pytest.fixture(scope="module")
def instruct(tmp_path_factory):
    path = write_tiny_instruct(tmp_path_factory.mktemp("chat") / "instruct")
    prompt_ids, gen_ids = reference_chat_tokens(path)
    assert gen_ids[-1] == 4097 and len(gen_ids) >= 3   # ends on <|im_end|>: the stop list matters
    return path, prompt_ids, gen_ids


def _export(instruct, target, tmp_path_factory, **kw):
    return api.export(instruct[0], target, tmp_path_factory.mktemp(f"chat_{target}") / "pkg", CFG, **kw)


# ---- template discovery, end of turn, stop list ------------------------------------------------------
@pytest.mark.parametrize("where", ["jinja", "tokenizer_config", "chat_template_json"])
def test_template_found_in_each_place(tmp_path, where):
    path = write_tiny_instruct(tmp_path / "m", template_in=where)
    tmpl, source = chat_template.find_template(path)
    assert tmpl == CHATML
    assert source == {"jinja": "chat_template.jinja", "tokenizer_config": "tokenizer_config.json",
                      "chat_template_json": "chat_template.json"}[where]
    info = chat_template.chat_info(path, load_tokenizer(path), {"eos_token_id": 0})
    assert info.end_of_turn == "<|im_end|>" and info.stop_token_ids == (0, 4097)


def test_named_template_list_takes_default(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]}))
    assert chat_template.find_template(tmp_path) == ("D", "tokenizer_config.json")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": None}))
    assert chat_template.find_template(tmp_path) == (None, None)


def test_template_end_of_turn_joins_generation_config_stops(tmp_path):
    path = write_tiny_instruct(tmp_path / "m")
    tok = load_tokenizer(path)
    info = chat_template.chat_info(path, tok, {"eos_token_id": [0, 7]})   # lists kept, eot appended once
    assert info.stop_token_ids == (0, 7, 4097)
    assert chat_template.with_stops({"eos_token_id": 0}, info)["eos_token_id"] == [0, 7, 4097]
    base = chat_template.chat_info(tmp_path / "nothing", tok, {"eos_token_id": 3})
    assert base.template is None and base.stop_token_ids == (3,)


@pytest.mark.parametrize("template", [CHATML, LLAMA3])
def test_render_chat_equals_transformers(instruct, template):
    import transformers as tf

    tok = tf.AutoTokenizer.from_pretrained(instruct[0])
    msgs = QUESTION + [{"role": "assistant", "content": " Paris. "}, {"role": "user", "content": "Und 東京?"}]
    for gen_prompt in (True, False):
        want = tok.apply_chat_template(msgs, chat_template=template, tokenize=False,
                                       add_generation_prompt=gen_prompt)
        assert render_chat(template, msgs, gen_prompt, bos_token="<|endoftext|>") == want


def test_render_chat_is_sandboxed_and_reports_template_errors():
    with pytest.raises(BadInputError, match="no system"):
        render_chat("{{ raise_exception('no system') }}", QUESTION)
    with pytest.raises(BadInputError, match="unsafe|not safely callable|access|Security"):
        render_chat("{{ messages.__class__.__mro__ }}{{ ''.__class__.__subclasses__() }}", QUESTION)
    with pytest.raises(BadInputError, match="TemplateSyntaxError"):
        render_chat("{% for %}", QUESTION)


# ---- each runtime's own chat path ---------------------------------------------------------------------
def test_onnxruntime_genai_chat_matches_transformers(instruct, tmp_path_factory):
    import onnxruntime_genai as og

    pkg = _export(instruct, "onnx", tmp_path_factory)
    assert pkg.passed
    assert (pkg.path / "chat_template.jinja").read_text() == CHATML
    assert pkg.manifest["tokenizer"]["chat"]["stop_token_ids"] == [0, 4097]
    assert "chat_template.jinja" in pkg.manifest["tokenizer"]["files"]
    model = og.Model(str(pkg.path))
    tok = og.Tokenizer(model)
    text = tok.apply_chat_template(json.dumps(QUESTION), add_generation_prompt=True)
    ids = list(tok.encode(text))
    assert ids == instruct[1]
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + 16, do_sample=False)
    gen = og.Generator(model, params)
    gen.append_tokens(ids)
    while not gen.is_done():
        gen.generate_next_token()
    got = [int(t) for t in gen.get_sequence(0)][len(ids):]
    # onnxruntime-genai stops on the stop id (well before max_length) and leaves it out of the sequence
    assert got == instruct[2][:-1]


@pytest.mark.slow
def test_litert_lm_chat_matches_transformers(instruct, tmp_path_factory):
    from slmpack.targets.tflite import litertlm
    from tokenizers import Tokenizer

    pkg = _export(instruct, "tflite", tmp_path_factory)
    assert pkg.passed
    bundle = pkg.manifest["runtime"]["litert_lm"]
    assert bundle["prompt_template"] == "jinja" and bundle["stop_token_ids"] == [0, 4097]
    # the runtime applies the bundle's jinja_prompt_template to the raw user turns
    got = litertlm.generate_chat(pkg.path / "model.litertlm", QUESTION, max_tokens=16)
    tok = Tokenizer.from_file(str(pkg.path / "tokenizer.json"))
    assert got == tok.decode(instruct[2][:-1])


@pytest.mark.slow
def test_text_llm_runner_chat_matches_transformers(instruct, tmp_path_factory):
    from slmpack.targets.executorch.llm_runner import generate_subprocess, reference_pieces

    pkg = _export(instruct, "executorch", tmp_path_factory)
    assert pkg.passed
    methods = pkg.manifest["io"]["constant_methods"]
    assert methods["get_eos_ids"] == [0, 4097]
    prompt = render_chat((pkg.path / "chat_template.jinja").read_text(), QUESTION)
    out = generate_subprocess(pkg.path / "model.pte", pkg.path / "tokenizer.json", prompt, 16)
    assert out["stats"]["prompt_tokens"] == len(instruct[1])
    assert out["pieces"] == reference_pieces(pkg.path / "tokenizer.json", instruct[2])


@pytest.mark.slow
def test_coreml_chat_matches_transformers(instruct, tmp_path_factory):
    """Core ML through the MIL interpreter; the app side: template + stops from the package metadata."""
    from slmpack.targets import registry
    from slmpack.targets.coreml.llm_metadata import read_metadata

    pkg = _export(instruct, "coreml", tmp_path_factory)
    md = read_metadata(pkg.path / "model.mlpackage")
    assert md["slmpack.chat_template"] == CHATML and json.loads(md["slmpack.stop_token_ids"]) == [0, 4097]
    prompt = render_chat(md["slmpack.chat_template"], QUESTION)
    ids = load_tokenizer(pkg.path).encode(prompt).ids
    assert ids == instruct[1]
    runner = registry.get("coreml").runner(pkg.path, pkg.manifest)
    assert greedy(runner, np.array(ids), 16, tuple(json.loads(md["slmpack.stop_token_ids"]))) == instruct[2]
