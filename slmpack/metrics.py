"""LLM-level comparison metrics from logits (numpy, float64 for stability)."""
from __future__ import annotations

import numpy as np


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def perplexity(logits: np.ndarray, targets: np.ndarray) -> float:
    lp = log_softmax(logits)
    nll = -lp[np.arange(len(targets)), targets]
    return float(np.exp(nll.mean()))


def compare_logits(ref: np.ndarray, test: np.ndarray, targets: np.ndarray) -> dict:
    """ref/test [N, V] logits at the same positions; targets [N] the true next tokens."""
    lr, lt = log_softmax(ref), log_softmax(test)
    kl = (np.exp(lr) * (lr - lt)).sum(axis=-1)
    ppl_ref, ppl_test = perplexity(ref, targets), perplexity(test, targets)
    return {
        "top1_agreement": float((ref.argmax(-1) == test.argmax(-1)).mean()),
        "mean_kl": float(max(kl.mean(), 0.0)),
        "perplexity_reference": ppl_ref,
        "perplexity_artifact": ppl_test,
        "perplexity_delta_pct": 100.0 * (ppl_test / ppl_ref - 1.0),
    }
