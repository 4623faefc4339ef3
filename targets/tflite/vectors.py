"""Per-signature test vectors: reference logits for a padded prompt through every ``prefill_<n>``
signature, followed by two decode steps. Stored beside (never inside) the package's base
``test_vectors.safetensors``, whose contract is target-independent."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from slmpack.exporter.reference_runner import ReferenceRunner

FILE = "test_vectors_tflite.safetensors"
DECODE_STEPS = 2


def prompt_length(n: int) -> int:
    """Real tokens fed to ``prefill_<n>``: a quarter of the rows are padding (at least one row
    when n > 1), so every signature is checked with padding in play."""
    return max(1, n - max(1, n // 4)) if n > 1 else 1


def write(out_dir: Path, ref, lengths: tuple[int, ...], vocab_size: int) -> str:
    rng = np.random.default_rng(0)
    runner = ReferenceRunner(ref)
    tensors = {}
    for n in lengths:
        k = prompt_length(n)
        ids = rng.integers(0, vocab_size, k + DECODE_STEPS, dtype=np.int64)
        runner.reset()
        tensors[f"prefill_{n}/ids"] = ids[:k]
        tensors[f"prefill_{n}/logits"] = runner.prefill(ids[:k]).astype(np.float32)
        tensors[f"prefill_{n}/decode_ids"] = ids[k:]
        tensors[f"prefill_{n}/decode_logits"] = np.stack(
            [runner.decode(int(t), k + i) for i, t in enumerate(ids[k:])]).astype(np.float32)
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
