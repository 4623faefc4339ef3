"""Slow grid: representative families on ExecuTorch, LiteRT and Core ML (fp32 compute, MIL
interpreter). Gemma 2 (sandwich norms, soft-caps, alternating sliding window), Phi-3 (fused
tensors, partial rotary, LongRoPE past its switch), GPT-2 (learned positions, Conv1D, LayerNorm) and
the mixture-of-experts families (Mixtral with a sliding window, Granite MoE's fused expert tensors
and multipliers, Qwen2-MoE's gated shared expert): top-k routing on every target.

Each package passes the ladder, its greedy tokens (>= 40, prompt + generation longer than every
window) equal transformers' ``generate``, and the real clients (TextLLMRunner, LiteRT-LM) print them.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from slmpack import api
from slmpack.errors import SlmpackError
from slmpack.targets.coreml.options import CoreMLOptions
from tests.test_family_onnx import CFG, NEW, family_model_with_tokenizer

pytestmark = pytest.mark.slow
FAMILIES = ("gemma2", "phi3", "gpt2", "mixtral", "granitemoe", "qwen2_moe")


def _no_partial_utf8(path):
    """TextLLMRunner's callback raises on a piece that is a partial UTF-8 sequence: zero those
    lm_head rows (untied head) so the random model never predicts one."""
    from safetensors.torch import load_file as load_t, save_file
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    partial = [i for i in range(4096) if "\ufffd" in tok.decode([i], skip_special_tokens=False)]
    sd = load_t(path / "model.safetensors")
    sd["lm_head.weight"][partial] = 0.0
    save_file(sd, str(path / "model.safetensors"), metadata={"format": "pt"})
    return path


def _hf_matches_package_greedy(src, pkg):
    import transformers as tf

    g = pkg.manifest["validation"]["greedy"]
    assert g["match"] and len(g["reference_ids"]) >= NEW
    prompt = load_file(str(pkg.path / "test_vectors.safetensors"))["greedy_prompt_ids"].tolist()
    hf = tf.AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32, attn_implementation="eager").eval()
    n = len(g["reference_ids"])
    out = hf.generate(torch.tensor([prompt]), max_new_tokens=n, min_new_tokens=n, do_sample=False)
    assert out[0, len(prompt):].tolist() == g["reference_ids"]
    assert len(set(g["reference_ids"])) > 5
    return g


KNOWN = {  # measured 2026-12-02 on this machine; strict: a fix turns these into failures to remove
    ("coreml", "phi3"): "ladder passes (vs the fp16-cache reference), but on the 22-token prompt greedy leaves "
                        "transformers' at token 7: the fp16 state rounds K/V (|K| ~ 25 on these random weights)",
    # measured 2026-12-03: ladder passes (greedy on the package's own prompt too); on LONG_PROMPT the fp16
    # state's K/V rounding flips a near tie, and with kv_cache=io (fp32 caches) both equal transformers' 40
    ("coreml", "granitemoe"): "LONG_PROMPT greedy leaves transformers' at token 12 (its top-2 logits 5.429 / 5.382; "
                              "a router's k-th vs (k+1)-th probability gap is 4.2e-6 on that sequence): fp16 state",
    ("coreml", "qwen2_moe"): "LONG_PROMPT greedy leaves transformers' at token 9, where its top-2 logits differ by "
                             "0.0028 (17.6699 / 17.6671): the fp16 state's K/V rounding flips the tie",
}


def _known(target):
    return [pytest.param(f, marks=pytest.mark.xfail(strict=True, reason=KNOWN[(target, f)]))
            if (target, f) in KNOWN else f for f in FAMILIES]


# 22 tokens: past LongRoPE's switch (16) from the prompt on, 22 + NEW <= max_context. transformers'
# Phi-3 `generate` drops and re-prefills the cache the first time a generation crosses the switch,
# which no KV-cache client does (README; the ONNX family test uses a prompt past it for the same reason)
LONG_PROMPT = "Return the list of every value that the function reads from the file, then sort it by name and print"


def _runner_matches_hf_on_the_long_prompt(src, pkg) -> list[int]:
    """The package's runner (slmpack.load) greedy-decodes transformers' `generate` tokens from LONG_PROMPT."""
    from tokenizers import Tokenizer

    import slmpack
    from slmpack.runtime.greedy import greedy
    from tests.test_family_onnx import hf_greedy

    prompt = Tokenizer.from_file(str(pkg.path / "tokenizer.json")).encode(LONG_PROMPT).ids
    assert len(prompt) > 16 and len(prompt) + NEW <= CFG.trace.max_context
    want = hf_greedy(src, prompt, NEW)
    assert len(set(want)) > 5            # a discriminating continuation, not one repeated token
    assert greedy(slmpack.load(pkg.path).runner(), np.array(prompt), NEW, ()) == want
    return want


@pytest.mark.parametrize("family", _known("executorch"))
def test_family_on_executorch(tmp_path, family):
    from tokenizers import Tokenizer

    from slmpack.targets.executorch.llm_runner import generate_subprocess, reference_pieces

    src = _no_partial_utf8(family_model_with_tokenizer(tmp_path / "src", family))
    pkg = api.export(src, "executorch", tmp_path / "pkg", config=CFG)
    assert pkg.passed, pkg.manifest["validation"]
    assert pkg.manifest["validation"]["greedy"]["match"]
    tok = pkg.path / "tokenizer.json"
    want = _runner_matches_hf_on_the_long_prompt(src, pkg)
    out = generate_subprocess(pkg.path / "model.pte", tok, LONG_PROMPT, NEW)
    assert out["pieces"] == reference_pieces(tok, want)


@pytest.mark.parametrize("family", _known("tflite"))
def test_family_on_tflite(tmp_path, family):
    from tokenizers import Tokenizer

    from slmpack.targets.tflite import litertlm

    src = family_model_with_tokenizer(tmp_path / "src", family)
    if family == "phi3":   # refused in preflight, naming the delta (see targets/tflite/ops.py)
        with pytest.raises(SlmpackError) as e:
            api.export(src, "tflite", tmp_path / "pkg", config=CFG)
        assert "longrope" in str(e.value).lower() and not (tmp_path / "pkg").exists()
        return
    pkg = api.export(src, "tflite", tmp_path / "pkg", config=CFG)
    assert pkg.passed, pkg.manifest["validation"]
    g = _hf_matches_package_greedy(src, pkg)
    tok = Tokenizer.from_file(str(src / "tokenizer.json"))
    want = [t for t in g["reference_ids"] if t != 0]
    if len(want) == len(g["reference_ids"]):   # LiteRT-LM stops at eos (0)
        got = litertlm.generate(pkg.path / "model.litertlm", pkg.manifest["test_vectors"]["prompt"],
                                max_tokens=len(want))
        assert got == tok.decode(want)


@pytest.mark.parametrize("family", _known("coreml"))
def test_family_on_coreml(tmp_path, family):
    src = family_model_with_tokenizer(tmp_path / "src", family)
    pkg = api.export(src, "coreml", tmp_path / "pkg", config=CFG,
                     options=CoreMLOptions(deployment_target="ios18", compute_precision="fp32"))
    assert pkg.passed, pkg.manifest["validation"]
    assert pkg.manifest["validation"]["greedy"]["match"]
    _runner_matches_hf_on_the_long_prompt(src, pkg)   # past Phi-3's LongRoPE switch from the prompt on
    assert np.isfinite(pkg.manifest["validation"]["heldout"]["top1_agreement"])
