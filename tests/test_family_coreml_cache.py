"""Slow: the sliding-window families on Core ML in both KV-cache layouts (iOS 18 state, fp16; and
inputs/outputs, fp32 at fp32 compute), judged against transformers past the window.

Issue #13's "kv_cache=io + sliding window" failure was neither: coremltools 9 converted
``gelu(approximate="tanh")`` as the exact GELU (``targets/coreml/lower.py``, ``gelu_tanh``), 8e-4 on
Gemma 2's fp32 logits from the first position on. Only io has the strict fp32 bound (state's fp16
bound hid it), and only while the fixture's final soft-cap 3 kept logits near 3 (bound 4e-4; with
Gemma 2's own 30, logits ~20, the rtol term lets 2e-3 pass). So io is asserted to 1e-4 here, and the
Gemma / Qwen3 io packages against fp64 transformers over 60 positions (window 8).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from slmpack import api
from slmpack.targets.coreml.options import CoreMLOptions
from tests.test_family_onnx import CFG, family_model_with_tokenizer
from tests.test_family_targets import _hf_matches_package_greedy
from tests.tiny_families import WINDOW

pytestmark = pytest.mark.slow
SLIDING = [("gemma2", 0), ("gemma3", 0), ("qwen3", 0), ("mixtral", 1)]   # mixtral 1: a window on every layer
SEQ = 60                      # > every window (8, 12), <= max_context (64)
FP32_LOGITS_ATOL = 1e-4       # measured after the fix: <= 1.2e-5 (logits up to ~20); before: 7.0e-4 (gemma2)
# vs fp64 transformers, which MoE cannot run (grouped_mm is fp32 / half only). Mixtral 1 is judged by the
# ladder and greedy only: its top-3-of-8 routing makes fp32 itself ill-conditioned here (our fp32 reference
# is up to 5.4e-4 from our fp64 one on these 40 positions, transformers' fp32 as far; the package 6.7e-4)
FP64_ORACLE = {"gemma2", "gemma3", "qwen3"}


def _transformers_logits(src, ids: torch.Tensor) -> np.ndarray:
    import transformers as tf

    hf = tf.AutoModelForCausalLM.from_pretrained(src, dtype=torch.float64, attn_implementation="eager").eval()
    with torch.no_grad():
        return hf(ids).logits[0].numpy()


def _package_logits(pkg, ids: torch.Tensor, prompt: int) -> np.ndarray:
    """Prefill ``prompt`` tokens, then decode the rest one by one (the cache round trip)."""
    import slmpack

    runner = slmpack.load(pkg.path).runner()
    runner.reset()
    seq = ids[0].numpy()
    out = [runner.prefill(seq[:prompt])]
    out += [runner.decode(int(seq[p]), p)[None] for p in range(prompt, len(seq))]
    return np.concatenate(out).astype(np.float64)


# measured 2026-12-03; strict: a fix turns it into a failure to remove
KNOWN = {("mixtral", 1, "state"): "ladder passes; greedy leaves transformers' at new token 9, a near tie (top-2 "
                                  "logits 16.3180 / 16.3086) the fp16 state's K/V rounding flips; io matches all 40"}
CASES = [pytest.param(f, v, kv, marks=pytest.mark.xfail(strict=True, reason=KNOWN[(f, v, kv)]))
         if (f, v, kv) in KNOWN else (f, v, kv) for f, v in SLIDING for kv in ("state", "io")]


@pytest.mark.parametrize("family,variant,kv_cache", CASES)
def test_sliding_window_family_on_coreml_cache_layouts(tmp_path, family, variant, kv_cache):
    src = family_model_with_tokenizer(tmp_path / "src", family, variant)
    pkg = api.export(src, "coreml", tmp_path / "pkg", config=CFG,
                     options=CoreMLOptions(deployment_target="ios18", compute_precision="fp32", kv_cache=kv_cache))
    v = pkg.manifest["validation"]
    assert pkg.passed, v
    assert pkg.manifest["kv_cache"]["kind"] == kv_cache
    _hf_matches_package_greedy(src, pkg)        # >= 40 new tokens: prompt + generation past every window
    if kv_cache == "io" and family in FP64_ORACLE:   # fp32 caches: fp32 rounding from transformers
        assert max(v["vectors"]["prefill_max_abs_diff"], v["vectors"]["decode_max_abs_diff"]) <= FP32_LOGITS_ATOL
        ids = torch.randint(3, 4000, (1, SEQ), generator=torch.Generator().manual_seed(1))
        want = _transformers_logits(src, ids)
        got = _package_logits(pkg, ids, prompt=WINDOW // 2)
        err = np.abs(got - want).max(-1)
        assert err.max() <= FP32_LOGITS_ATOL, (err.max(), int(err.argmax()))
        assert np.abs(want).max() > 1.0     # logits that could be wrong by more than the bound
