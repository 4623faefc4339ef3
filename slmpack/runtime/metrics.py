"""LLM-level comparison metrics from logits: the one implementation every caller uses (the
validation ladder, calibration's sensitivity search and ``calibration.evaluate``'s torch API).

Arrays are ``[N, V]`` logits at N positions; everything is computed in float64 so large logits
neither overflow nor lose the small differences being measured. Masked logits (``-inf``) are
handled: positions with zero reference probability contribute nothing to the KL.
"""
from __future__ import annotations

import numpy as np


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def mean_nll(logits: np.ndarray, targets: np.ndarray) -> float:
    """Mean negative log-likelihood of ``targets`` [N] under ``logits`` [N, V] (nats)."""
    lp = log_softmax(logits)
    return float(-lp[np.arange(len(targets)), np.asarray(targets)].mean())


def perplexity(logits: np.ndarray, targets: np.ndarray) -> float:
    return float(np.exp(mean_nll(logits, targets)))


def mean_kl(ref: np.ndarray, test: np.ndarray) -> float:
    """Mean over positions of KL(p_ref || p_test), in nats (>= 0)."""
    lr, lt = log_softmax(ref), log_softmax(test)
    p = np.exp(lr)
    with np.errstate(invalid="ignore"):
        terms = np.where(p > 0, p * (lr - lt), 0.0)
    return float(max(terms.sum(axis=-1).mean(), 0.0))


def top1_agreement(ref: np.ndarray, test: np.ndarray) -> float:
    return float((np.asarray(ref).argmax(-1) == np.asarray(test).argmax(-1)).mean())


class LogitComparison:
    """Accumulates the comparison window by window, so a held-out pass never holds every
    position's [N, V] logits (two float32 copies plus float64 temporaries: gigabytes for a 50k
    vocabulary) — only one window at a time."""

    def __init__(self) -> None:
        self.n = self.matches = 0
        self.kl_sum = self.nll_ref = self.nll_test = 0.0

    def add(self, ref: np.ndarray, test: np.ndarray, targets: np.ndarray) -> LogitComparison:
        n = len(targets)
        if n == 0:
            return self
        self.matches += int((np.asarray(ref).argmax(-1) == np.asarray(test).argmax(-1)).sum())
        self.kl_sum += mean_kl(ref, test) * n
        self.nll_ref += mean_nll(ref, targets) * n
        self.nll_test += mean_nll(test, targets) * n
        self.n += n
        return self

    def result(self) -> dict:
        n = max(self.n, 1)
        nll_ref, nll_test = self.nll_ref / n, self.nll_test / n
        return {
            "top1_agreement": self.matches / n,
            "mean_kl": max(self.kl_sum / n, 0.0),
            "perplexity_reference": float(np.exp(nll_ref)),
            "perplexity_artifact": float(np.exp(nll_test)),
            "perplexity_delta_pct": 100.0 * float(np.expm1(nll_test - nll_ref)),
        }


def compare_logits(ref: np.ndarray, test: np.ndarray, targets: np.ndarray) -> dict:
    """ref/test [N, V] logits at the same positions; targets [N] the true next tokens."""
    return LogitComparison().add(ref, test, targets).result()
