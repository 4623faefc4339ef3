"""The encoder benchmark compares like with like: on the MiniLM-shaped fixture, the bench worker's
eager backend (sentence-transformers) and its slmpack ONNX backend (the runtime kit's class) return
the same embeddings for the same 128-token block, and the worker protocol (own process) reports
throughput consistent with its own call count. No timed assertion."""
from __future__ import annotations

import numpy as np
import pytest

import slmpack
from bench.perf.encoder import SCRIPT, cosine_min
from bench.perf.encoder_worker import block, eager_backend, slmpack_backend
from bench.perf.procs import Worker

VOCAB = 384   # the fixtures' WordPiece vocabulary (conftest.VOCAB)


@pytest.fixture(scope="module")
def minilm_onnx(minilm_st, tmp_path_factory):
    return slmpack.export(minilm_st, target="onnx", out=tmp_path_factory.mktemp("bench") / "onnx").path


def test_block_is_exactly_seq_tokens():
    ids, mask, types = block(3, 128, 0, VOCAB)
    assert ids.shape == mask.shape == types.shape == (3, 128)
    assert (ids[:, 0] == 101).all() and (ids[:, -1] == 102).all() and mask.all() and not types.any()
    assert ids.max() < VOCAB and not np.array_equal(ids[0], ids[1])


def test_eager_and_package_agree_on_the_bench_block(minilm_st, minilm_onnx):
    x = block(4, 128, 7, VOCAB)
    ref = eager_backend(str(minilm_st), 1)(*x)
    got = slmpack_backend("onnx", str(minilm_onnx), 1)(*x)
    assert ref.shape == got.shape == (4, 384)
    assert cosine_min(got, ref) >= 0.99999
    assert np.allclose(np.linalg.norm(got, axis=-1), 1.0, atol=1e-5)   # normalize inside the graph


def test_worker_protocol(minilm_onnx):
    import sys

    w = Worker("onnx", sys.executable, "slmpack:onnx", minilm_onnx, 1, vocab=VOCAB, script=SCRIPT)
    try:
        r = w.ask(cmd="bench", batch=2, seq=128, min_s=0.0)
        emb = np.asarray(w.ask(cmd="embed", batch=4, seq=128)["embedding"])
        mem = w.ask(cmd="mem")
    finally:
        w.close()
    assert r["calls"] >= 2 and r["sentences_per_s"] == pytest.approx(r["calls"] * 2 / r["seconds"])
    direct = slmpack_backend("onnx", str(minilm_onnx), 1)(*block(4, 128, 7, VOCAB))
    assert cosine_min(emb, direct) >= 0.999999
    assert mem["vmhwm_kb"] >= mem["vmrss_kb"] > w.ready["rss_before_load_kb"]
