"""Long context by default: min(4096, max_position_embeddings) in every package's own config, and
generation past position 3000 (after a chunked prefill) matches transformers."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from slmpack import api
from slmpack.config import ExportConfig, TraceConfig, ValidationConfig
from slmpack.exporter.reference_runner import greedy
from slmpack.targets import registry
from tests.tiny_models import write_tiny_model

CFG = ExportConfig(validation=ValidationConfig(heldout_tokens=32, greedy_tokens=4))   # context: the default
PROMPT = 3000


@pytest.fixture(scope="module")
def long_model(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("long") / "m", "llama", vocab=96, hidden=32, max_pos=8192)


@pytest.fixture(scope="module")
def transformers_long(long_model):
    import transformers as tf

    rng = np.random.default_rng(3)
    prompt = rng.integers(3, 96, PROMPT)
    model = tf.AutoModelForCausalLM.from_pretrained(long_model).eval()
    with torch.no_grad():
        out = model.generate(torch.tensor(prompt)[None], max_new_tokens=8, do_sample=False, eos_token_id=None)
    return prompt, out[0, PROMPT:].tolist()


def test_default_context_is_capped_model_context():
    assert TraceConfig().resolved(8192).max_context == 4096
    assert TraceConfig().resolved(512).max_context == 512
    assert TraceConfig(max_context=300).resolved(8192).max_context == 300


def _runtime_context(pkg) -> int:
    t, p = pkg.target, pkg.path
    if t == "onnx":
        return json.loads((p / "genai_config.json").read_text())["model"]["context_length"]
    if t == "executorch":
        return pkg.manifest["io"]["constant_methods"]["get_max_context_len"]
    if t == "tflite":   # no tokenizer here, so no .litertlm: the cache the .tflite's decode signature takes
        from ai_edge_litert.interpreter import Interpreter

        sig = Interpreter(model_path=str(p / pkg.manifest["artifact"])).get_signature_runner("decode")
        return int(sig.get_input_details()["kv_cache_k_0"]["shape"][2])
    from slmpack.targets.coreml.llm_metadata import read_context

    return read_context(p / "model.mlpackage")


def _check(target, long_model, transformers_long, tmp_path):
    pkg = api.export(long_model, target, tmp_path / target, CFG)
    assert pkg.passed
    assert pkg.manifest["model"]["max_context"] == 4096 and _runtime_context(pkg) == 4096
    assert pkg.manifest["kv_cache"]["bytes"] == 2 * 2 * 2 * 8 * 4096 * (2 if pkg.manifest["kv_cache"]["dtype"] == "float16" else 4)
    prompt, want = transformers_long
    runner = registry.get(target).runner(pkg.path, pkg.manifest)
    assert greedy(runner, prompt, len(want)) == want        # prefill in 24 chunks of 128, decode at 3000..


def test_onnx_long_context_default_and_generation(long_model, transformers_long, tmp_path):
    _check("onnx", long_model, transformers_long, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("target", ["executorch", "tflite", "coreml"])
def test_long_context_default_and_generation(target, long_model, transformers_long, tmp_path):
    _check(target, long_model, transformers_long, tmp_path)
