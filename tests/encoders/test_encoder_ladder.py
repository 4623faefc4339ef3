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


def test_label_ties_at_the_declared_bound_are_excused_and_nothing_else():
    from slmpack.runtime.records import Tolerance

    tol = Tolerance(atol=1e-4, rtol=1e-4)  # the fp32 bound: 1e-4 + 1e-4 * 2 = 3e-4 here
    ref = np.array([[0.5, 0.5 + 2e-6, -1.0], [2.0, 1.0, 0.0], [0.3, 0.3 + 1e-3, 0.0]])
    got = np.array([[0.5 + 1e-6, 0.5, -1.0], [2.0, 1.0, 0.0], [0.3, 0.3 + 1e-3, 0.0]])
    m = compare_outputs("logits", ref, got, ["a", "b", "c"], tol)
    assert m["label_agreement"] == 1.0 and m["label_ties"] == 1 and passes("logits", m, FP32)
    got[2] = [0.3 + 2e-3, 0.3, 0.0]  # a 1e-3 margin is beyond 2 * 3e-4: a real disagreement
    m = compare_outputs("logits", ref, got, ["a", "b", "c"], tol)
    assert m["label_agreement"] == 2 / 3 and not passes("logits", m, FP32)
    assert compare_outputs("logits", ref, np.array([[0.5 + 1e-6, 0.5, -1.0]] * 3), ["a", "b", "c"])[
        "label_agreement"] < 1.0  # without a tolerance nothing is excused


def test_activation_slack_scales_the_vector_bound():
    from slmpack.runtime.encoder_check import vector_metrics
    from slmpack.runtime.records import Tolerance

    want = np.array([[1.0, -1.0], [0.5, 0.25]], np.float32)
    vectors = {"expected": want, "attention_mask": np.ones((2, 3), np.int64)}
    got = want + np.float32(0.03)
    tol = Tolerance(atol=1e-3, rtol=1e-2)   # bound 0.011 alone
    assert not vector_metrics("sentence_embedding", vectors, got, tol)["passed"]
    floats = want.copy()
    floats[1, 0] += 0.02                    # activation rounding moved the reference by 0.02
    m = vector_metrics("sentence_embedding", {**vectors, "expected_float_activations": floats}, got, tol)
    assert abs(m["activation_slack"] - 0.04) < 1e-6 and abs(m["bound"] - 0.051) < 1e-6 and m["passed"]
    assert not vector_metrics("sentence_embedding", {**vectors, "expected_float_activations": floats},
                              want + np.float32(0.06), tol)["passed"]
