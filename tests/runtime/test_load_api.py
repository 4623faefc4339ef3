"""``slmpack.load(PKG).generate(...)`` reproduces the package's reference greedy tokens for a
package of every target, from token ids, and from text through the package's tokenizer equals
transformers' own ``generate`` on the source checkpoint."""
from __future__ import annotations

import numpy as np
import pytest

import slmpack
from slmpack.runtime import safetensors

TRACE = {"max_context": 64, "max_prompt": 32}
TARGETS = ["onnx", "tflite", "executorch", "coreml"]


@pytest.fixture(scope="module", params=TARGETS)
def target_package(request, tiny_llama, tmp_path_factory):
    from slmpack import api
    from slmpack.config import ExportConfig, TraceConfig

    out = tmp_path_factory.mktemp("load") / request.param
    options = None
    if request.param == "coreml":   # fp32 compute: the reference's greedy tokens are exact
        from slmpack.targets.coreml.options import ComputePrecision, CoreMLOptions
        options = CoreMLOptions(compute_precision=ComputePrecision.FP32)
    return api.export(tiny_llama, request.param, out, ExportConfig(trace=TraceConfig(**TRACE)), options).path


def test_generate_reproduces_the_reference_greedy_tokens(target_package):
    pkg = slmpack.load(target_package)
    tv = safetensors.load(target_package / pkg.manifest.test_vectors.file)
    want = [int(t) for t in tv["greedy_ids"]]
    out = pkg.generate(tv["greedy_prompt_ids"].tolist(), max_new_tokens=len(want))
    assert list(out.ids) == want and out.prompt_ids == tuple(tv["greedy_prompt_ids"].tolist())
    assert pkg.manifest.target.value == target_package.name
    runner = pkg.runner()                       # the Runner protocol, reusable after reset
    runner.reset()
    logits = runner.prefill(tv["prompt_ids"])
    assert logits.shape == tv["prefill_logits"].shape
    assert np.abs(logits - tv["prefill_logits"]).max() <= pkg.manifest.tolerance.atol + \
        pkg.manifest.tolerance.rtol * np.abs(tv["prefill_logits"]).max()
    assert pkg.validate()["passed"]


def test_generate_from_text_matches_transformers(quant_model, tmp_path):
    import torch
    import transformers as tf
    from tokenizers import Tokenizer

    from slmpack import api
    from slmpack.config import ExportConfig, TraceConfig

    path = api.export(quant_model, "tflite", tmp_path / "pkg", ExportConfig(trace=TraceConfig(**TRACE))).path
    pkg = slmpack.load(path)
    out = pkg.generate("def f(x):", max_new_tokens=8)
    ids = Tokenizer.from_file(str(quant_model / "tokenizer.json")).encode("def f(x):", add_special_tokens=False).ids
    model = tf.AutoModelForCausalLM.from_pretrained(quant_model).eval()
    with torch.no_grad():
        ref = model.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False, eos_token_id=None,
                             pad_token_id=0)[0, len(ids):].tolist()
    assert list(out.prompt_ids) == ids and list(out.ids)[:len(ref)] == ref
    assert out.text == Tokenizer.from_file(str(path / "tokenizer.json")).decode(list(out.ids))


def test_load_refuses_bad_prompts(kit_package):
    from slmpack.errors import BadInputError

    pkg = slmpack.load(kit_package)
    with pytest.raises(BadInputError):
        pkg.generate([], 4)
    with pytest.raises(BadInputError):
        pkg.generate([pkg.manifest.model.vocab_size], 4)
    with pytest.raises(BadInputError):   # the tiny model ships no tokenizer.json
        pkg.generate("text", 4)
