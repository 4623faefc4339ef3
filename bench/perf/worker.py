"""Benchmark worker: one runtime in one process, driven over stdin/stdout (JSON lines).

Standalone on purpose (stdlib + numpy at import time): the peers run it under their own venv's
Python. ``python worker.py BACKEND PATH --threads N`` loads the model, answers ``{"ready": ...}``,
then serves ``{"cmd": "bench", "prompt": 128, "decode": 32, "seed": 0}`` and ``{"cmd": "mem"}``
until ``{"cmd": "quit"}``. Backends: eager (slmpack reference in PyTorch), target:<name> (an
slmpack package through its registered runner), ort-genai-io (any ONNX file with GenAI I/O
names, e.g. Optimum's export), llamacpp (a GGUF file through llama-cpp-python).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np


def mem_kb() -> dict:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out[key.lower() + "_kb"] = int(rest.split()[0])
    return out


# ---- backends: each has prefill(ids) -> logits [S, V], decode(token, pos) -> logits [V], reset() ----

def eager(threads: int):
    import torch

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    from slmpack.exporter.checkpoint import load_state_dict
    from slmpack.exporter.reference import build_reference
    from slmpack.exporter.reference_runner import ReferenceRunner
    from slmpack.exporter.spec import load_spec

    def make(path: str):
        spec = load_spec(path)
        ctx = min(256, spec.max_position_embeddings)
        return ReferenceRunner(build_reference(spec, load_state_dict(path, False), ctx))
    return make


def target(name: str, threads: int):
    import inspect
    from pathlib import Path

    from slmpack.targets import registry

    t = registry.get(name)
    kw = {"threads": threads} if "threads" in inspect.signature(t.runner).parameters else {}

    def make(path: str):
        manifest = json.loads((Path(path) / "manifest.json").read_text())
        return t.runner(Path(path), manifest, **kw)
    return make


class OrtGenaiIO:
    """Minimal runner for an ONNX decoder with GenAI I/O names (past_key_values.N.key -> present.N.key)."""

    def __init__(self, path: str, threads: int):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads, so.log_severity_level = threads, 1, 3
        self.s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.s.get_inputs()]
        self.past_names = [n for n in self.names if n.startswith("past_key_values.")]
        shape = self.s.get_inputs()[self.names.index(self.past_names[0])].shape
        self.kvh, self.hd = int(shape[1]), int(shape[3])
        self.max_prompt = 1 << 30
        self.reset()

    def reset(self):
        self.past = [np.zeros((1, self.kvh, 0, self.hd), np.float32)] * len(self.past_names)
        self.pos = 0

    def _run(self, ids):
        s = len(ids)
        feeds = {"input_ids": np.asarray(ids, np.int64)[None],
                 "attention_mask": np.ones((1, self.pos + s), np.int64)}
        if "position_ids" in self.names:
            feeds["position_ids"] = np.arange(self.pos, self.pos + s, dtype=np.int64)[None]
        feeds.update(zip(self.past_names, self.past))
        out = self.s.run(None, feeds)
        self.past, self.pos = out[1:], self.pos + s
        return out[0][0]

    def prefill(self, ids):
        return self._run(ids)

    def decode(self, token, pos):
        return self._run([token])[0]


class LlamaCpp:
    def __init__(self, path: str, threads: int):
        from llama_cpp import Llama

        self.llm = Llama(model_path=path, n_ctx=512, n_batch=256, n_ubatch=256, n_threads=threads,
                         n_threads_batch=threads, logits_all=False, verbose=False)
        self.max_prompt = 256

    def reset(self):
        self.llm.reset()

    def prefill(self, ids):
        self.llm.eval([int(i) for i in ids])
        return None

    def decode(self, token, pos):
        self.llm.eval([int(token)])
        return None


def prepare(backend: str, threads: int):
    """Import everything the backend needs (not counted as runtime memory); return its loader."""
    if backend == "eager":
        return eager(threads)
    if backend.startswith("target:"):
        return target(backend.split(":", 1)[1], threads)
    if backend == "ort-genai-io":
        import onnxruntime  # noqa: F401
        return lambda path: OrtGenaiIO(path, threads)
    if backend == "llamacpp":
        import llama_cpp  # noqa: F401
        return lambda path: LlamaCpp(path, threads)
    raise ValueError(f"unknown backend {backend}")


def bench(runner, prompt: int, decode: int, vocab: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, prompt)
    runner.reset()
    step = getattr(runner, "max_prompt", None) or len(ids)   # a package prefills in chunks of max_prompt
    t0 = time.perf_counter()
    for start in range(0, len(ids), step):
        runner.prefill(ids[start:start + step])
    t1 = time.perf_counter()
    toks = rng.integers(0, vocab, decode)
    for i, tok in enumerate(toks):
        runner.decode(int(tok), prompt + i)
    t2 = time.perf_counter()
    return {"prefill_s": t1 - t0, "decode_s": t2 - t1}


def serve(prepare, handlers: dict, default_vocab: int, ready_extra=None) -> None:
    """The worker protocol both bench workers speak: parse ``BACKEND PATH --threads N --vocab V``, pin
    to N cores, load through ``prepare(backend, threads)(path)``, print ``{"ready": ...}``, then answer
    JSON-line commands: ``handlers[cmd](model, cmd_dict, args)``, ``mem`` (RSS), ``quit``."""
    ap = argparse.ArgumentParser()
    ap.add_argument("backend")
    ap.add_argument("path")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--vocab", type=int, default=default_vocab)
    a = ap.parse_args()
    try:
        os.sched_setaffinity(0, set(range(min(a.threads, os.cpu_count() or 1))))
    except (AttributeError, OSError):
        pass
    make = prepare(a.backend, a.threads)
    before = mem_kb()  # after imports: the runtime's own memory is what loading the model adds
    t0 = time.perf_counter()
    model = make(a.path)
    ready = {"ready": True, "load_s": time.perf_counter() - t0, "rss_before_load_kb": before["vmrss_kb"]}
    print(json.dumps({**ready, **(ready_extra() if ready_extra else {})}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "quit":
            break
        handler = handlers.get(cmd["cmd"])
        print(json.dumps(handler(model, cmd, a) if handler else mem_kb()), flush=True)


def main() -> None:
    serve(prepare, {"bench": lambda runner, c, a: bench(runner, c["prompt"], c["decode"], a.vocab, c.get("seed", 0))},
          default_vocab=4000)


if __name__ == "__main__":
    main()
