"""Greedy generation through any Runner (prompt chunked by ``runner.max_prompt``)."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def prefill_all(runner, prompt: np.ndarray) -> np.ndarray:
    """Reset, feed the whole prompt in chunks of ``runner.max_prompt``; logits of the last chunk."""
    runner.reset()
    prompt = np.asarray(prompt, dtype=np.int64)
    logits = None
    for start in range(0, len(prompt), runner.max_prompt):
        logits = runner.prefill(prompt[start:start + runner.max_prompt])
    if logits is None:
        raise ValueError("empty prompt")
    return logits


def greedy(runner, prompt: np.ndarray, n: int, eos: Sequence[int] = ()) -> list[int]:
    """Up to ``n`` greedy tokens after ``prompt`` (stops after an ``eos`` token)."""
    logits = prefill_all(runner, prompt)[-1]
    out: list[int] = []
    pos = len(prompt)
    while n > 0:
        tok = int(np.argmax(logits))
        out.append(tok)
        if tok in eos or len(out) == n:
            break
        logits = runner.decode(tok, pos)
        pos += 1
    return out


__all__ = ["greedy", "prefill_all"]
