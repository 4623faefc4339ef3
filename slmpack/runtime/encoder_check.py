"""Encoder test vectors vs an artifact's output (standard library + numpy): the one comparison the
export ladder, ``slmpack.load``'s users and the on-device runner share.

``vector_metrics(output, want, got, mask, tol)`` compares a package's ``expected`` output for its
padded test-vector batch with what a runtime produced: max |Δ| against the declared bound
(``atol + rtol * max|want|``), plus the output's own agreement measure: cosine per row
(``sentence_embedding``), per valid token (``last_hidden_state``; padded positions carry no
meaning and are dropped), or label agreement (``logits``, argmax per row).
"""
from __future__ import annotations

import numpy as np

POOLED = ("sentence_embedding", "logits")   # one row per sequence: small enough to ship back as JSON


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity along the last axis, in float64."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-30)


def vector_metrics(output: str, want: np.ndarray, got: np.ndarray, mask: np.ndarray, tol) -> dict:
    """The comparison of one test-vector batch (``tol``: any record with ``atol`` and ``rtol``)."""
    want, got = np.asarray(want, np.float32), np.asarray(got, np.float32)
    if got.shape != want.shape:
        return {"rows": int(want.shape[0]), "width": int(mask.shape[1]), "max_abs_diff": None,
                "bound": None, "passed": False, "shape": list(got.shape), "expected_shape": list(want.shape)}
    if output == "last_hidden_state":
        keep = np.asarray(mask).astype(bool)
        want, got = want[keep], got[keep]
    diff = float(np.abs(got - want).max())
    bound = float(tol.atol + tol.rtol * float(np.abs(want).max()))
    m = {"rows": int(mask.shape[0]), "width": int(mask.shape[1]), "max_abs_diff": diff, "bound": bound,
         "passed": bool(diff <= bound)}
    if output == "logits":
        m["label_agreement"] = float(np.mean(want.argmax(-1) == got.argmax(-1)))
    else:
        cos = cosine(want, got)
        m["min_cosine"], m["mean_cosine"] = float(cos.min()), float(cos.mean())
    return m


def run_vectors(backend, vectors: dict) -> np.ndarray:
    """The backend's output for the package's padded test-vector batch."""
    return backend.run(vectors["input_ids"], vectors["attention_mask"], vectors.get("token_type_ids"))


def check_vectors(backend, output: str, vectors: dict, tol) -> dict:
    """Run the test vectors through ``backend`` and compare with their ``expected`` output."""
    return vector_metrics(output, vectors["expected"], run_vectors(backend, vectors), vectors["attention_mask"], tol)


__all__ = ["POOLED", "cosine", "vector_metrics", "run_vectors", "check_vectors"]
