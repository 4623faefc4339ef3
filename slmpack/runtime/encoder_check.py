"""Encoder test vectors vs an artifact's output (standard library + numpy): the one comparison the
export ladder, ``slmpack.load``'s users and the on-device runner share.

``vector_metrics(output, vectors, got, tol)`` compares a package's ``expected`` output for its
padded test-vector batch with what a runtime produced: max |Δ| against the declared bound
(``atol + rtol * max|want| + activation slack``), plus the output's own agreement measure: cosine
per row (``sentence_embedding``), per valid token (``last_hidden_state``; padded positions carry no
meaning and are dropped), or label agreement (``logits``, argmax per row, ties at the bound
excused: ``label_agreement``).

The activation slack: a plan with dynamic int8 activations ships ``expected_float_activations``
too (the same fake-quant weights, float activations). Each runtime picks its own activation
quantizer per CPU (ORT MatMulNBits per-block, XNNPACK qd8 per-token, each with its own rounding and
zero point: AVX2, AVX-512/VNNI/AMX and Arm i8mm kernels differ), so its output may sit anywhere
within its own activation-rounding effect of the float-activation output, as the reference's does;
two such schemes differ by at most the sum of their effects, about ``2 * max|expected -
expected_float_activations|``. The bound therefore scales with this model's measured sensitivity to
activation rounding, not with one CPU's rounding.
"""
from __future__ import annotations

import numpy as np

POOLED = ("sentence_embedding", "logits")   # one row per sequence: small enough to ship back as JSON


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity along the last axis, in float64."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-30)


def activation_slack(vectors: dict, keep=None) -> float:
    """``2 * max|expected - expected_float_activations|`` (0 without dynamic activations)."""
    if "expected_float_activations" not in vectors:
        return 0.0
    a = np.asarray(vectors["expected"], np.float32)
    b = np.asarray(vectors["expected_float_activations"], np.float32)
    if a.shape != b.shape:
        return 0.0
    if keep is not None:
        a, b = a[keep], b[keep]
    return 2.0 * float(np.abs(a - b).max())


def label_agreement(want: np.ndarray, got: np.ndarray, bound: float) -> tuple[float, int]:
    """Share of rows whose label the reference cannot tell from its own top label at the declared
    bound (each logit may move by ``bound``: a label within ``2 * bound`` of the top is a tie), and
    the number of such ties where the argmax differs. Near-ties in the reference are decided by
    each CPU's rounding, so exact argmax equality there is not portable."""
    want, got = np.asarray(want, np.float64), np.asarray(got, np.float64)
    rows = np.arange(want.shape[0])
    picked = want[rows, got.argmax(-1)]
    ok = picked >= want.max(-1) - 2.0 * bound
    ties = int(np.sum(ok & (got.argmax(-1) != want.argmax(-1))))
    return float(np.mean(ok)), ties


def vector_metrics(output: str, vectors: dict, got: np.ndarray, tol) -> dict:
    """The comparison of one test-vector batch (``tol``: any record with ``atol`` and ``rtol``)."""
    want, got = np.asarray(vectors["expected"], np.float32), np.asarray(got, np.float32)
    mask = np.asarray(vectors["attention_mask"])
    if got.shape != want.shape:
        return {"rows": int(want.shape[0]), "width": int(mask.shape[1]), "max_abs_diff": None,
                "bound": None, "passed": False, "shape": list(got.shape), "expected_shape": list(want.shape)}
    keep = mask.astype(bool) if output == "last_hidden_state" else None
    slack = activation_slack(vectors, keep)
    if keep is not None:
        want, got = want[keep], got[keep]
    diff = float(np.abs(got - want).max())
    bound = float(tol.atol + tol.rtol * float(np.abs(want).max()) + slack)
    m = {"rows": int(mask.shape[0]), "width": int(mask.shape[1]), "max_abs_diff": diff, "bound": bound,
         "activation_slack": slack, "passed": bool(diff <= bound)}
    if output == "logits":
        m["label_agreement"], m["label_ties"] = label_agreement(want, got, bound)
    else:
        cos = cosine(want, got)
        m["min_cosine"], m["mean_cosine"] = float(cos.min()), float(cos.mean())
    return m


def run_vectors(backend, vectors: dict) -> np.ndarray:
    """The backend's output for the package's padded test-vector batch."""
    return backend.run(vectors["input_ids"], vectors["attention_mask"], vectors.get("token_type_ids"))


def check_vectors(backend, output: str, vectors: dict, tol) -> dict:
    """Run the test vectors through ``backend`` and compare with their ``expected`` output."""
    return vector_metrics(output, vectors, run_vectors(backend, vectors), tol)


__all__ = ["POOLED", "cosine", "activation_slack", "label_agreement", "vector_metrics", "run_vectors", "check_vectors"]
