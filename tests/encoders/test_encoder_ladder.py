"""The encoder ladder's metrics on hand-made inputs (numpy only, fast)."""
from __future__ import annotations

import numpy as np

from slmpack.exporter.encoder.ladder import FP32, QUANTIZED, compare_outputs, neighbour_agreement, passes, top_k_neighbours


def test_neighbours_and_agreement():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(40, 16))
    assert neighbour_agreement(ref, ref.copy()) == 1.0
    nb = top_k_neighbours(ref, 5)
    assert nb.shape == (40, 5) and not any(i in nb[i] for i in range(40))  # never its own neighbour
    noisy = ref + rng.normal(scale=2.0, size=ref.shape)
    assert neighbour_agreement(ref, noisy) < 0.5


def test_embedding_thresholds():
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(30, 8))
    m = compare_outputs("sentence_embedding", ref, ref + 1e-7)
    assert m["min_cosine"] > 0.999999 and passes("sentence_embedding", m, FP32)
    bad = ref.copy()
    bad[3] = -bad[3]  # one flipped vector: min cosine -1
    m = compare_outputs("sentence_embedding", ref, bad)
    assert m["min_cosine"] < -0.99 and not passes("sentence_embedding", m, QUANTIZED)


def test_label_agreement():
    ref = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0]])
    got = np.array([[1.0, 0.0], [1.0, 0.0], [2.0, 1.0]])
    m = compare_outputs("logits", ref, got, ["a", "b"])
    assert m["label_agreement"] == 2 / 3 and not passes("logits", m, FP32)
    assert passes("logits", compare_outputs("logits", ref, ref, ["a", "b"]), FP32)
