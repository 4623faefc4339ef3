"""LiteRT adapter (``ai_edge_litert``, else ``tflite_runtime``): fixed-length ``prefill_<n>``
signatures and a one-token ``decode`` signature; inputs ``tokens`` int32 [1, S], ``input_pos``
int32 [S], the KV cache as ``kv_cache_{k,v}_<i>`` [1, kv_heads, max_context, head_dim] in and out.

A chunk of s tokens runs through the smallest ``prefill_<n>`` with n >= s whose rows fit
(pos + n <= max_context: LiteRT clamps an out-of-range DYNAMIC_UPDATE_SLICE start), else the
largest fitting one, else ``decode``. Padded rows get token 0 and the positions after the chunk;
later steps overwrite them before any query attends them. The bytes pass the kit's flatbuffer
verifier before the interpreter (which runs LiteRT's own verifier) sees them.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..errors import BadInputError, ErrorCode
from ..manifest import Manifest
from ..tflite_verify import ArtifactInvalid, verify_bytes
from .base import Positions, runtime_version

PREFILL_RE = re.compile(r"^prefill_(\d+)$")
DECODE = "decode"


def interpreter_module():
    """(``interpreter`` module, runtime name): ai_edge_litert, else its predecessor tflite_runtime."""
    try:
        from ai_edge_litert import interpreter
        return interpreter, "ai_edge_litert"
    except ImportError:
        try:
            from tflite_runtime import interpreter  # type: ignore[no-redef]
            return interpreter, "tflite_runtime"
        except ImportError:
            raise BadInputError("neither ai_edge_litert nor tflite_runtime is installed",
                                ErrorCode.E_RUNTIME_MISSING) from None


def load_interpreter(data: bytes, threads: int = 0):
    """Verify ``data`` in Python, then hand it to LiteRT (which verifies it again)."""
    data = bytes(data)
    verify_bytes(data)
    mod, _ = interpreter_module()
    try:
        return mod.Interpreter(model_content=data, num_threads=threads or None)
    except ValueError as e:  # the interpreter's verifier / model builder
        raise ArtifactInvalid(f"LiteRT rejected the model: {str(e).splitlines()[0]}",
                              ErrorCode.E_TFLITE_LITERT_VERIFY) from None


class TFLiteAdapter(Positions):
    def __init__(self, pkg: Path, manifest: Manifest | None, threads: int = 0, *, path: Path | None = None):
        path = Path(path) if path is not None else Path(pkg) / manifest.artifact
        _, self.runtime_name = interpreter_module()
        self.runtime_version = runtime_version(self.runtime_name)
        self._data = path.read_bytes()   # the interpreter keeps a view: hold the bytes
        self.interpreter = load_interpreter(self._data, threads)
        sigs = self.interpreter.get_signature_list()
        self.lengths = sorted(int(mt.group(1)) for k in sigs if (mt := PREFILL_RE.match(k)))
        if DECODE not in sigs or not self.lengths:
            raise ArtifactInvalid(f"{path.name}: needs a 'decode' and at least one 'prefill_<n>' signature, "
                                  f"has {sorted(sigs)}", ErrorCode.E_RUNNER_SIGNATURE)
        self._runners = {n: self.interpreter.get_signature_runner(f"prefill_{n}") for n in self.lengths}
        self._decode = self.interpreter.get_signature_runner(DECODE)
        details = self._decode.get_input_details()
        if "kv_cache_k_0" not in details or not {"tokens", "input_pos"} <= set(details):
            raise ArtifactInvalid(f"decode inputs {sorted(details)} lack tokens/input_pos/kv_cache_k_0",
                                  ErrorCode.E_RUNNER_SIGNATURE)
        self.cache_names = sorted((k for k in details if k.startswith("kv_cache_")),
                                  key=lambda k: (int(k.rsplit("_", 1)[1]), k))
        self._cache_specs = {k: (tuple(int(d) for d in details[k]["shape"]), details[k]["dtype"])
                             for k in self.cache_names}
        super().__init__(self.lengths[-1], int(details["kv_cache_k_0"]["shape"][2]))
        self.reset()

    def reset(self) -> None:
        self.cache = {k: np.zeros(shape, dtype) for k, (shape, dtype) in self._cache_specs.items()}
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
        """Signature length for the next chunk of a prompt with n tokens left (1 = decode)."""
        fits = [m for m in self.lengths if m <= self.max_context - self.pos]
        covering = [m for m in fits if m >= n]
        if covering:
            return covering[0]
        full = [m for m in fits if m <= n]
        return full[-1] if full else 1

    def prefill(self, ids) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        self.check_chunk(len(ids))
        out, done = [], 0
        while done < len(ids):
            length = self._pick(len(ids) - done)
            chunk = ids[done:done + length]
            runner = self._decode if length == 1 and 1 not in self.lengths else self._runners[length]
            out.append(self._run(runner, chunk, length))
            done += len(chunk)
        return np.concatenate(out)

    def prefill_signature(self, ids, length: int) -> np.ndarray:
        """Run exactly ``prefill_<length>`` (for the per-signature test vectors)."""
        if length not in self.lengths or len(ids) > length or self.pos + length > self.max_context:
            raise BadInputError(f"cannot run {len(ids)} tokens through prefill_{length} at position {self.pos}",
                                ErrorCode.E_RUNNER_SIGNATURE)
        return self._run(self._runners[length], np.asarray(ids, dtype=np.int64), length)

    def decode(self, token: int, pos: int) -> np.ndarray:
        self.check_decode(pos)
        if pos >= self.max_context:
            raise BadInputError(f"position {pos} exceeds max context {self.max_context}", ErrorCode.E_CONTEXT_OVERFLOW)
        return self._run(self._decode, np.array([int(token)]), 1)[0]
