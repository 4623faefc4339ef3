"""The eager PyTorch reference, behind the same Runner protocol as every target."""
from __future__ import annotations

import numpy as np
import torch

from slmpack.exporter.kv_cache import ConcatCache
from slmpack.exporter.reference import ReferenceModel


class ReferenceRunner:
    def __init__(self, ref: ReferenceModel):
        self.ref = ref
        self.max_prompt = ref.max_context
        self.reset()

    def reset(self) -> None:
        s = self.ref.spec
        empty = torch.zeros(1, s.num_kv_heads, 0, s.head_dim)
        self.k = [empty] * s.num_layers
        self.v = [empty] * s.num_layers
        self.pos = 0

    @torch.no_grad()
    def _run(self, ids: np.ndarray) -> np.ndarray:
        n = len(ids)
        cache = ConcatCache(self.k, self.v)
        logits = self.ref.step(torch.as_tensor(np.asarray(ids, dtype=np.int64))[None],
                               torch.arange(self.pos, self.pos + n), cache)
        self.k, self.v, self.pos = cache.present_k, cache.present_v, self.pos + n
        return logits[0].numpy()

    def prefill(self, ids: np.ndarray) -> np.ndarray:
        return self._run(ids)

    def decode(self, token: int, pos: int) -> np.ndarray:
        assert pos == self.pos, (pos, self.pos)
        return self._run(np.array([token]))[0]


def greedy(runner, prompt: np.ndarray, n: int, eos: tuple[int, ...] = ()) -> list[int]:
    """Greedy continuation through any Runner: prefill in chunks of runner.max_prompt, then decode."""
    runner.reset()
    prompt = np.asarray(prompt, dtype=np.int64)
    logits = None
    for start in range(0, len(prompt), runner.max_prompt):
        logits = runner.prefill(prompt[start:start + runner.max_prompt])[-1]
    out: list[int] = []
    pos = len(prompt)
    for _ in range(n):
        tok = int(np.argmax(logits))
        out.append(tok)
        if tok in eos or len(out) == n:
            break
        logits = runner.decode(tok, pos)
        pos += 1
    return out
