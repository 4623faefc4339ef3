"""Per-signature test vectors: reference logits for a padded prompt through every ``prefill_<n>``
signature, followed by two decode steps. Stored beside (never inside) the package's base
``test_vectors.safetensors``, whose contract is target-independent. The target declares the
inputs (``requests``); the pipeline runs the reference on them and hands back the traces."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from slmpack.targets.base import ReferenceRequest, ReferenceTrace

FILE = "test_vectors_tflite.safetensors"
DECODE_STEPS = 2


def prompt_length(n: int) -> int:
    """Real tokens fed to ``prefill_<n>``: a quarter of the rows are padding (at least one row
    when n > 1), so every signature is checked with padding in play."""
    return max(1, n - max(1, n // 4)) if n > 1 else 1


def requests(lengths: tuple[int, ...], vocab_size: int) -> tuple[ReferenceRequest, ...]:
    """One seeded random prompt per signature (padding in play), then DECODE_STEPS given tokens."""
    rng = np.random.default_rng(0)
    out = []
    for n in lengths:
        k = prompt_length(n)
        ids = [int(t) for t in rng.integers(0, vocab_size, k + DECODE_STEPS, dtype=np.int64)]
        out.append(ReferenceRequest(f"prefill_{n}", tuple(ids[:k]), tuple(ids[k:])))
    return tuple(out)


def write(out_dir: Path, traces: tuple[ReferenceTrace, ...]) -> str:
    tensors = {}
    for t in traces:
        p = t.request.name
        tensors[f"{p}/ids"] = np.asarray(t.request.prompt, dtype=np.int64)
        tensors[f"{p}/logits"] = t.prefill_logits.astype(np.float32)
        tensors[f"{p}/decode_ids"] = np.asarray(t.decode_ids, dtype=np.int64)
        tensors[f"{p}/decode_logits"] = t.decode_logits.astype(np.float32)
    save_file(tensors, str(out_dir / FILE), metadata={"format": "slmpack-tflite-signature-vectors-1"})
    return FILE


def check(runner, path: Path, tol) -> dict:
    """Run every signature's vectors through ``runner.prefill_signature`` and ``decode``."""
    vec = load_file(str(path))
    lengths = sorted(int(k.split("/")[0].split("_")[1]) for k in vec if k.endswith("/ids"))
    out: dict = {"signatures": {}}
    passed = True
    for n in lengths:
        p = f"prefill_{n}"
        runner.reset()
        pre = runner.prefill_signature(vec[f"{p}/ids"], n)
        d_pre = float(np.abs(pre - vec[f"{p}/logits"]).max())
        pos = len(vec[f"{p}/ids"])
        d_dec = max(float(np.abs(runner.decode(int(t), pos + i) - vec[f"{p}/decode_logits"][i]).max())
                    for i, t in enumerate(vec[f"{p}/decode_ids"]))
        bound = tol.atol + tol.rtol * float(np.abs(vec[f"{p}/logits"]).max())
        ok = d_pre <= bound and d_dec <= bound
        passed &= ok
        out["signatures"][p] = {"prompt_tokens": pos, "prefill_max_abs_diff": d_pre,
                                "decode_max_abs_diff": d_dec, "bound": bound, "passed": ok}
    runner.reset()
    out["passed"] = bool(passed and lengths)
    return out
