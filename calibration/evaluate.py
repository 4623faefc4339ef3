"""LLM-level comparison of logits: perplexity, mean KL(ref || test), top-1 agreement (torch API
with shape checks; the arithmetic is ``slmpack.runtime.metrics``, shared with the validation ladder).

Logits are ``[T, V]`` or ``[B, T, V]``; all log-probabilities are computed with ``log_softmax``
in float64 so large logits neither overflow nor lose the small differences being measured.

* perplexity: ``exp(mean NLL)`` of next-token prediction, logits at position ``t`` scored against
  ``ids[t+1]`` (the last position has no target);
* KL: ``sum_v p_ref(v) (log p_ref(v) - log p_test(v))`` per position, averaged over positions;
* top-1 agreement: fraction of positions where both argmaxes coincide.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from slmpack.runtime import metrics
from slmpack.errors import BadInputError


def _as_3d(x: torch.Tensor, what: str) -> torch.Tensor:
    if x.dim() == 2:
        x = x[None]
    if x.dim() != 3 or x.shape[1] == 0:
        raise BadInputError(f"{what} must be [T, V] or [B, T, V], got {tuple(x.shape)}",
                            "E_EVAL_SHAPE")
    return x


def _pair(ref: torch.Tensor, test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    ref, test = _as_3d(ref, "reference logits"), _as_3d(test, "test logits")
    if ref.shape != test.shape:
        raise BadInputError(f"logit shapes differ: {tuple(ref.shape)} vs {tuple(test.shape)}",
                            "E_EVAL_SHAPE")
    return ref, test


def _np2(x: torch.Tensor):
    """[B, T, V] -> [B*T, V] float64 numpy (the math lives in slmpack.runtime.metrics)."""
    return x.detach().to(torch.float64).reshape(-1, x.shape[-1]).numpy()


def perplexity(logits: torch.Tensor, ids: torch.Tensor) -> float:
    """Next-token perplexity of ``ids`` ([T] or [B, T]) under ``logits``."""
    logits = _as_3d(logits, "logits")
    ids = ids[None] if ids.dim() == 1 else ids
    if tuple(ids.shape) != tuple(logits.shape[:2]) or ids.shape[1] < 2:
        raise BadInputError(f"ids {tuple(ids.shape)} do not match logits "
                            f"{tuple(logits.shape)} (need T >= 2)", "E_EVAL_SHAPE")
    return metrics.perplexity(_np2(logits[:, :-1]), ids[:, 1:].reshape(-1).to(torch.long).numpy())


def mean_kl(ref_logits: torch.Tensor, test_logits: torch.Tensor) -> float:
    """Mean over positions of KL(p_ref || p_test), in nats."""
    ref, test = _pair(ref_logits, test_logits)
    return metrics.mean_kl(_np2(ref), _np2(test))


def top1_agreement(ref_logits: torch.Tensor, test_logits: torch.Tensor) -> float:
    ref, test = _pair(ref_logits, test_logits)
    return metrics.top1_agreement(_np2(ref), _np2(test))


@dataclass(frozen=True)
class LogitComparison:
    kl: float
    top1: float
    ppl_ref: float | None
    ppl_test: float | None

    def to_json(self) -> dict:
        return {"kl": self.kl, "top1_agreement": self.top1, "perplexity_ref": self.ppl_ref,
                "perplexity_test": self.ppl_test}


def compare_logits(ref_logits: torch.Tensor, test_logits: torch.Tensor,
                   ids: torch.Tensor | None = None) -> LogitComparison:
    """All three metrics at once (perplexities only when ``ids`` are given)."""
    return LogitComparison(
        kl=mean_kl(ref_logits, test_logits), top1=top1_agreement(ref_logits, test_logits),
        ppl_ref=None if ids is None else perplexity(ref_logits, ids),
        ppl_test=None if ids is None else perplexity(test_logits, ids))
