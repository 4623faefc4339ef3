"""The encoder validation ladder, target-independent, over the runtime's EncoderPackage.

  (a) structural  the target's own check of the artifact
  (b) vectors     the package's test-vector batch (padded rows included) vs the reference output
  (c) held-out    every held-out sentence through the package and the reference:
                  sentence_embedding  cosine per sentence (min, mean) + top-5 neighbour agreement
                  logits              label agreement + max |Δlogit|
                  last_hidden_state   cosine per valid token (min, mean)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from slmpack.runtime.encoder_check import check_vectors as _check_backend
from slmpack.runtime.encoder_check import cosine as _cos
from slmpack.runtime.encoder_check import label_agreement


@dataclass(frozen=True)
class EncoderRequirements:
    min_cosine: float = 0.99999
    mean_cosine: float = 0.99999
    top5_agreement: float = 0.95
    label_agreement: float = 1.0


FP32 = EncoderRequirements()
QUANTIZED = EncoderRequirements(min_cosine=0.98, mean_cosine=0.99, top5_agreement=0.95, label_agreement=0.0)


def top_k_neighbours(emb: np.ndarray, k: int = 5) -> np.ndarray:
    """Indices of each row's k most cosine-similar other rows (stable order: ties by index)."""
    x = emb.astype(np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30)
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    return np.argsort(-sim, axis=1, kind="stable")[:, :k]


def neighbour_agreement(ref: np.ndarray, got: np.ndarray, k: int = 5) -> float:
    a, b = top_k_neighbours(ref, k), top_k_neighbours(got, k)
    return float(np.mean([set(x) == set(y) for x, y in zip(a, b)]))


def compare_outputs(output: str, ref, got, id2label=(), tol=None) -> dict:
    """Held-out outputs vs the reference; ``tol`` (the target's declared logit tolerance) excuses
    label ties at that bound (``encoder_check.label_agreement``), none without it."""
    if output == "sentence_embedding":
        cos = _cos(ref, got)
        return {"sentences": len(cos), "min_cosine": float(cos.min()), "mean_cosine": float(cos.mean()),
                "top5_agreement": neighbour_agreement(ref, got, 5),
                "max_abs_diff": float(np.abs(ref - got).max())}
    if output == "logits":
        bound = 0.0 if tol is None else float(tol.atol + tol.rtol * np.abs(ref).max())
        agreement, ties = label_agreement(ref, got, bound)
        return {"sentences": len(ref), "label_agreement": agreement, "label_ties": ties,
                "max_abs_diff": float(np.abs(ref - got).max()),
                "labels": sorted({id2label[int(i)] for i in ref.argmax(-1)}) if id2label else []}
    cos = np.concatenate([_cos(r, g) for r, g in zip(ref, got)])
    return {"sentences": len(ref), "tokens": len(cos), "min_cosine": float(cos.min()),
            "mean_cosine": float(cos.mean()), "max_abs_diff": float(max(np.abs(r - g).max() for r, g in zip(ref, got)))}


def passes(output: str, m: dict, req: EncoderRequirements) -> bool:
    if output == "logits":
        return m["label_agreement"] >= req.label_agreement
    ok = m["min_cosine"] >= req.min_cosine and m["mean_cosine"] >= req.mean_cosine
    return ok and (output != "sentence_embedding" or m["top5_agreement"] >= req.top5_agreement)


def check_vectors(package, vectors: dict, tol) -> dict:
    """The package's padded test-vector batch through its backend (``runtime/encoder_check.py``)."""
    return _check_backend(package.backend, package.output, vectors, tol)


def run_encoder_ladder(structural: list[str], package, vectors: dict, tol, reference_out, sentences: list[str],
                       req: EncoderRequirements = FP32) -> dict:
    result: dict = {"structural": {"problems": structural, "passed": not structural}}
    result["vectors"] = check_vectors(package, vectors, tol)  # fixed-length targets: width is a signature
    got = package.run(sentences)
    m = compare_outputs(package.output, reference_out, got, package.id2label, tol)
    m["requirement"] = {k: v for k, v in req.__dict__.items()}
    m["passed"] = passes(package.output, m, req)
    result["heldout"] = m
    result["passed"] = all(result[k]["passed"] for k in ("structural", "vectors", "heldout"))
    return _round(result)


def _round(x):
    if isinstance(x, float):
        return float(f"{x:.7g}")
    if isinstance(x, dict):
        return {k: _round(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_round(v) for v in x]
    return x
