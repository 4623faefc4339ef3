"""Runner over the LiteRT interpreter (``ai_edge_litert``, or ``tflite_runtime`` where that is the
module present) for ``model.tflite`` packages: fixed-length ``prefill_<n>`` signatures and a
one-token ``decode`` signature sharing the KV cache as signature inputs/outputs.

A prompt chunk of length s runs through the smallest ``prefill_<n>`` with n >= s whose rows fit
in the cache (pos + n <= max_context: LiteRT's DYNAMIC_UPDATE_SLICE clamps an out-of-range
start, which would overwrite real rows). Padded rows get token 0 and the positions that follow
the prompt; they write cache rows past the prompt only, which later steps overwrite before any
query can attend them (see module.py). The bytes are verified (verify.py) before the
interpreter sees them; the interpreter then runs LiteRT's own flatbuffer verifier.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from slmpack.errors import BadInputError
from slmpack.runtime.tflite_verify import ArtifactInvalid, verify_bytes

PREFILL_RE = re.compile(r"^prefill_(\d+)$")
DECODE = "decode"


def interpreter_module():
    """``ai_edge_litert.interpreter``, else ``tflite_runtime.interpreter`` (its predecessor)."""
    try:
        from ai_edge_litert import interpreter
    except ImportError:
        try:
            from tflite_runtime import interpreter  # type: ignore[no-redef]
        except ImportError:
            raise BadInputError("neither ai_edge_litert nor tflite_runtime is installed",
                                "E_RUNTIME_MISSING") from None
    return interpreter


def load_interpreter(data: bytes, threads: int = 0):
    """Verify ``data`` in Python, then hand it to LiteRT (which verifies it again)."""
    data = bytes(data)
    verify_bytes(data)
    mod = interpreter_module()
    try:
        return mod.Interpreter(model_content=data, num_threads=threads or None)
    except ValueError as e:  # the interpreter's verifier / model builder
        raise ArtifactInvalid(f"LiteRT rejected the model: {str(e).splitlines()[0]}", "E_TFLITE_LITERT_VERIFY") from e


class TFLiteRunner:
    def __init__(self, model_path: Path, threads: int = 0):
        self._data = Path(model_path).read_bytes()   # the interpreter keeps a view: hold the bytes
        self.interpreter = load_interpreter(self._data, threads)
        sigs = self.interpreter.get_signature_list()
        self.lengths = sorted(int(m.group(1)) for k in sigs if (m := PREFILL_RE.match(k)))
        if DECODE not in sigs or not self.lengths:
            raise ArtifactInvalid(f"{Path(model_path).name}: needs a 'decode' and at least one 'prefill_<n>' "
                                  f"signature, has {sorted(sigs)}")
        self._runners = {n: self.interpreter.get_signature_runner(f"prefill_{n}") for n in self.lengths}
        self._decode = self.interpreter.get_signature_runner(DECODE)
        details = self._decode.get_input_details()
        self.cache_names = sorted((k for k in details if k.startswith("kv_cache_")),
                                  key=lambda k: (int(k.rsplit("_", 1)[1]), k))
        self._cache_shapes = {k: tuple(details[k]["shape"]) for k in self.cache_names}
        self.max_context = int(details["kv_cache_k_0"]["shape"][2])
        self.max_prompt = self.lengths[-1]
        self.reset()

    def reset(self) -> None:
        self.cache = {k: np.zeros(s, np.float32) for k, s in self._cache_shapes.items()}
        self.pos = 0

    def _run(self, runner, ids: np.ndarray, length: int) -> np.ndarray:
        n = len(ids)
        tokens = np.zeros((1, length), np.int32)
        tokens[0, :n] = ids
        positions = np.arange(self.pos, self.pos + length, dtype=np.int32)
        out = runner(tokens=tokens, input_pos=positions, **self.cache)
        self.cache = {k: out[k] for k in self.cache_names}
        self.pos += n
        return np.asarray(out["logits"][0, :n], dtype=np.float32)

    def _pick(self, n: int) -> int:
        """Signature length for the next chunk of a prompt with n tokens left."""
        room = self.max_context - self.pos
        fits = [m for m in self.lengths if m <= room]
        covering = [m for m in fits if m >= n]
        if covering:
            return covering[0]
        full = [m for m in fits if m <= n]
        return full[-1] if full else 1   # 1 = the decode signature

    def prefill(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) > self.max_prompt:
            raise BadInputError(f"prompt chunk of {len(ids)} tokens exceeds the largest prefill signature "
                                f"({self.max_prompt}); callers chunk longer prompts", "E_PROMPT_TOO_LONG")
        if self.pos + len(ids) > self.max_context:
            raise BadInputError(f"sequence of {self.pos + len(ids)} exceeds max context {self.max_context}",
                                "E_CONTEXT_OVERFLOW")
        out = []
        done = 0
        while done < len(ids):
            length = self._pick(len(ids) - done)
            chunk = ids[done:done + length]
            runner = self._decode if length == 1 and 1 not in self.lengths else self._runners[length]
            out.append(self._run(runner, chunk, length))
            done += len(chunk)
        return np.concatenate(out)

    def prefill_signature(self, ids: np.ndarray, length: int) -> np.ndarray:
        """Run exactly ``prefill_<length>`` (for per-signature test vectors)."""
        if length not in self.lengths or len(ids) > length or self.pos + length > self.max_context:
            raise BadInputError(f"cannot run {len(ids)} tokens through prefill_{length} at position {self.pos}",
                                "E_RUNNER_SIGNATURE")
        return self._run(self._runners[length], np.asarray(ids, dtype=np.int64), length)

    def decode(self, token: int, pos: int) -> np.ndarray:
        if pos != self.pos:
            raise BadInputError(f"decode at position {pos}, cache holds {self.pos}", "E_RUNNER_POSITION")
        if pos >= self.max_context:
            raise BadInputError(f"position {pos} exceeds max context {self.max_context}", "E_CONTEXT_OVERFLOW")
        return self._run(self._decode, np.array([token]), 1)[0]
