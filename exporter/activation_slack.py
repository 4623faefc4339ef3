"""The measurement behind the ladder's activation slack (``slmpack/runtime/activation_slack.py``
explains it): the plan's fake-quant reference with and without its dynamic activation
fake-quant, on the test-vector inputs and the held-out text."""
from __future__ import annotations

import numpy as np

from slmpack.runtime.activation_slack import FLOAT_ACT_DECODE, FLOAT_ACT_PREFILL, FLOAT_ACT_TOP1


def measure(reference, hooks: list, reinstall, vectors: dict, heldout: np.ndarray, window: int,
            kv_dtype: str) -> dict[str, np.ndarray]:
    """The float-activation twin of ``vectors`` plus the held-out top-1 agreement of the two
    references. ``hooks``: the activation fake-quant handles on ``reference`` (removed for the
    measurement); ``reinstall()`` puts them back, so ``reference`` is unchanged afterwards."""
    from slmpack.exporter.reference_runner import ReferenceRunner
    from slmpack.runtime.greedy import prefill_all

    with_acts = _heldout_argmax(ReferenceRunner(reference, kv_dtype), heldout, window, prefill_all)
    for h in hooks:
        h.remove()
    try:
        runner = ReferenceRunner(reference, kv_dtype)
        runner.reset()
        pre = runner.prefill(vectors["prompt_ids"])
        pos = len(vectors["prompt_ids"])
        dec = [runner.decode(int(t), pos + i) for i, t in enumerate(vectors["decode_ids"])]
        without = _heldout_argmax(runner, heldout, window, prefill_all)
    finally:
        reinstall()
    agree = float(np.mean(with_acts == without)) if len(with_acts) else 1.0
    return {FLOAT_ACT_PREFILL: np.asarray(pre, np.float32),
            FLOAT_ACT_DECODE: (np.stack(dec) if dec else np.zeros_like(vectors["decode_logits"])).astype(np.float32),
            FLOAT_ACT_TOP1: np.array([agree], np.float32)}


def _heldout_argmax(runner, tokens: np.ndarray, window: int, prefill_all) -> np.ndarray:
    out = []
    for start in range(0, len(tokens) - 1, window):
        chunk = tokens[start:start + window + 1]
        if len(chunk) < 2:
            break
        out.append(np.asarray(prefill_all(runner, chunk[:-1])).argmax(-1))
    return np.concatenate(out) if out else np.zeros(0, np.int64)


