"""The eager PyTorch reference, behind the same Runner protocol as every target."""
from __future__ import annotations

import numpy as np
import torch

from slmpack.exporter.kv_cache import ConcatCache
from slmpack.exporter.reference import ReferenceModel


KV_STORE_DTYPES = {"float32": None, "float16": torch.float16, "bfloat16": torch.bfloat16}


class ReferenceRunner:
    """``kv_dtype``: the package's cache dtype (manifest ``kv_cache.dtype``); the reference rounds
    what it stores to it, so a package whose cache is fp16 is compared with the same math."""

    def __init__(self, ref: ReferenceModel, kv_dtype: str = "float32"):
        self.ref = ref
        self.store_dtype = KV_STORE_DTYPES.get(kv_dtype)
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
        cache = ConcatCache(self.k, self.v, self.store_dtype)
        logits = self.ref.step(torch.as_tensor(np.asarray(ids, dtype=np.int64))[None],
                               torch.arange(self.pos, self.pos + n), cache)
        self.k, self.v, self.pos = cache.present_k, cache.present_v, self.pos + n
        return logits[0].numpy()

    def prefill(self, ids: np.ndarray) -> np.ndarray:
        return self._run(ids)

    def decode(self, token: int, pos: int) -> np.ndarray:
        assert pos == self.pos, (pos, self.pos)
        return self._run(np.array([token]))[0]


def answer(runner: ReferenceRunner, request):
    """Run one target's ``ReferenceRequest`` through the reference -> ``ReferenceTrace``."""
    from slmpack.targets.base import ReferenceTrace

    runner.reset()
    prompt = np.asarray(request.prompt, dtype=np.int64)
    pre = runner.prefill(prompt).astype(np.float32)
    ids, logits, last = list(request.decode), [], pre[-1]
    for i in range(len(ids) if ids else request.greedy_steps):
        if not request.decode:
            ids.append(int(np.argmax(last)))
        last = runner.decode(ids[i], len(prompt) + i).astype(np.float32)
        logits.append(last)
    runner.reset()
    dec = np.stack(logits) if logits else np.zeros((0, pre.shape[-1]), np.float32)
    return ReferenceTrace(request, pre, tuple(ids), dec)


from slmpack.runtime.greedy import greedy  # noqa: E402  (one greedy loop for host, device and reference)
