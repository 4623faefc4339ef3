"""Encoder benchmark worker: one runtime in one process, driven over stdin/stdout (JSON lines).

Standalone (stdlib + numpy at import time) so the optimum peer runs it under its own venv's Python:
``python encoder_worker.py BACKEND PATH --threads N`` loads the model, answers ``{"ready": ...}``,
then serves ``{"cmd": "bench", "batch": 32, "seq": 128, "min_s": 1.0}`` (sentences/s on a fixed
[batch, seq] block of token ids, every row exactly ``seq`` tokens: [CLS] ids [SEP], mask all ones),
``{"cmd": "embed", "batch": 4, "seq": 128}`` (the embeddings, for the cross-runtime check) and
``{"cmd": "mem"}`` until ``{"cmd": "quit"}``.

Backends:
  slmpack:<target>  an slmpack encoder package through the runtime kit's backend class
                    (slmpack/runtime/encoder.py BACKENDS, what ``slmpack.load(PKG).embed`` runs);
  eager             sentence-transformers' SentenceTransformer(dir) forward in PyTorch (same weights);
  ort-st            an ONNX file with a ``sentence_embedding`` output (optimum's export) in onnxruntime.
"""
from __future__ import annotations

import json
import time

import numpy as np

try:   # run as a script (the peers' venvs): worker.py is beside it; imported: bench.perf.worker
    from worker import mem_kb, serve   # the shared worker protocol (stdlib + numpy only)
except ImportError:
    from bench.perf.worker import mem_kb, serve

CLS, SEP = 101, 102   # BERT uncased WordPiece ids (all-MiniLM-L6-v2)


def block(batch: int, seq: int, seed: int = 0, vocab: int = 30522):
    """[batch, seq] int64 ids (word pieces past the specials, [CLS] first, [SEP] last), mask, types."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000 if vocab > 2000 else 5, vocab, (batch, seq), dtype=np.int64)
    ids[:, 0], ids[:, -1] = CLS, SEP
    return ids, np.ones_like(ids), np.zeros_like(ids)


def slmpack_backend(target: str, path: str, threads: int):
    """The kit's backend class, as ``slmpack.load`` builds it. Thread count: ONNX takes it; for
    ExecuTorch the XNNPACK threadpool is reset to it and LiteRT's interpreter is built with it (the
    kit does not expose threads for those two yet; process affinity pins the cores in any case)."""
    from pathlib import Path

    from slmpack.runtime import encoder as rt

    manifest = json.loads((Path(path) / "manifest.json").read_text())
    if target == "onnx":
        be = rt.OnnxBackend(Path(path), manifest, threads=threads)
    else:
        be = rt.BACKENDS[target](Path(path), manifest)
    if target == "executorch":
        from executorch.extension.pybindings import portable_lib

        portable_lib._unsafe_reset_threadpool(threads)
    if target == "tflite":
        from ai_edge_litert.interpreter import Interpreter

        be.interpreter = Interpreter(model_content=be._data, num_threads=threads)
        be._runners = {n: be.interpreter.get_signature_runner(f"encode_{n}") for n in be.lengths}
    with_types = "token_type_ids" in manifest["encoder"]["inputs"]
    return lambda ids, mask, types: be.run(ids, mask, types if with_types else None)


def eager_backend(path: str, threads: int):
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    model = SentenceTransformer(path, device="cpu").eval()

    def run(ids, mask, types):
        feats = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask),
                 "token_type_ids": torch.from_numpy(types)}
        with torch.inference_mode():
            return model(feats)["sentence_embedding"].numpy()
    return run


def ort_st_backend(path: str, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads, so.log_severity_level = threads, 1, 3
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    names = [i.name for i in s.get_inputs()]

    def run(ids, mask, types):
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return s.run(["sentence_embedding"], {k: v for k, v in feeds.items() if k in names})[0]
    return run


def prepare(backend: str, threads: int):
    """Import the backend's modules (counted in rss_before_load); return its loader."""
    if backend.startswith("slmpack:"):
        import slmpack.runtime.encoder  # noqa: F401
        return lambda path: slmpack_backend(backend.split(":", 1)[1], path, threads)
    if backend == "eager":
        import sentence_transformers  # noqa: F401
        import torch  # noqa: F401
        return lambda path: eager_backend(path, threads)
    if backend == "ort-st":
        import onnxruntime  # noqa: F401
        return lambda path: ort_st_backend(path, threads)
    raise ValueError(f"unknown backend {backend}")


def bench(run, batch: int, seq: int, min_s: float, seed: int, vocab: int = 30522) -> dict:
    """Calls on one fixed block until ``min_s`` has passed (at least 2); sentences/s."""
    ids, mask, types = block(batch, seq, seed, vocab)
    calls, t0 = 0, time.perf_counter()
    while True:
        run(ids, mask, types)
        calls += 1
        dt = time.perf_counter() - t0
        if calls >= 2 and dt >= min_s:
            return {"calls": calls, "seconds": dt, "sentences_per_s": calls * batch / dt}


def main() -> None:
    serve(prepare, {
        "bench": lambda run, c, a: bench(run, c["batch"], c["seq"], c.get("min_s", 1.0), c.get("seed", 0), a.vocab),
        "embed": lambda run, c, a: {"embedding": np.asarray(run(*block(c["batch"], c["seq"], 7, a.vocab)),
                                                            np.float64).tolist()},
    }, default_vocab=30522, ready_extra=lambda: {"rss_after_load_kb": mem_kb()["vmrss_kb"]})


if __name__ == "__main__":
    main()
