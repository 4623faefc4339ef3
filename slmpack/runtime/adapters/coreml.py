"""Core ML adapters: ``coremltools.models.MLModel`` on macOS, the kit's numpy MIL interpreter
(``slmpack.runtime.mil``) anywhere else. Both feed ``tokens`` int32 [1, S] and ``input_pos`` int32
[S] and read ``logits``; the KV cache is Core ML state (iOS 18) or fixed-size arrays passed back in.
``auto`` picks Core ML where ``coremltools.libcoremlpython`` exists, else the interpreter;
``SLMPACK_COREML_RUNNER`` (``auto`` | ``interpreter`` | ``coreml``) overrides the choice. The
interpreter reads Model.proto through ``coremltools.proto`` (protobuf classes; no torch).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import BadInputError, ErrorCode, UnsupportedError
from ..manifest import KvCacheInfo, Manifest
from ..tolerance import coreml_stateful
from .base import Positions, runtime_version

ENV = "SLMPACK_COREML_RUNNER"
TOKENS, POSITIONS, LOGITS = "tokens", "input_pos", "logits"


def coreml_runtime_available() -> tuple[bool, str]:
    """(available, reason). Core ML runs only on macOS with coremltools' native extension."""
    if sys.platform != "darwin":
        return False, f"Core ML runs only on macOS (this is {sys.platform})"
    try:
        import coremltools.libcoremlpython  # noqa: F401
    except ImportError as e:
        return False, f"coremltools.libcoremlpython is not importable ({e})"
    return True, "macOS with coremltools.libcoremlpython"


class _CacheRunner(Positions):
    """Position bookkeeping and the KV cache round trip; subclasses provide ``_predict``."""

    def __init__(self, kv: KvCacheInfo, max_prompt: int, max_context: int):
        super().__init__(max_prompt, max_context)
        self.stateful = coreml_stateful(kv)
        self.cache_names = list(kv.details.get("names") or ())
        self.cache_dtype = np.dtype(kv.dtype)
        self.cache_shape = tuple(int(d) for d in kv.shape)

    def reset(self) -> None:
        self.pos = 0
        if self.stateful:
            self._reset_state()
        else:
            self.caches = {n: np.zeros(self.cache_shape, self.cache_dtype) for n in self.cache_names}

    def _run(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids).reshape(-1)
        self.check_chunk(len(ids))
        feeds = {TOKENS: ids.astype(np.int32)[None],
                 POSITIONS: np.arange(self.pos, self.pos + len(ids), dtype=np.int32)}
        if not self.stateful:
            feeds.update(self.caches)
        out = self._predict(feeds)
        if not self.stateful:
            self.caches = {n: np.asarray(out[f"{n}_out"], self.cache_dtype) for n in self.cache_names}
        self.pos += len(ids)
        return np.asarray(out[LOGITS], dtype=np.float32)[0]

    def prefill(self, ids) -> np.ndarray:
        return self._run(ids)

    def decode(self, token: int, pos: int) -> np.ndarray:
        self.check_decode(pos)
        return self._run(np.array([int(token)]))[0]


class InterpreterRunner(_CacheRunner):
    kind = "mil-interpreter"
    runtime_name = "slmpack-mil-interpreter"

    def __init__(self, package: Path, kv: KvCacheInfo, max_prompt: int, max_context: int):
        from ..mil import Interpreter, load_mlpackage

        super().__init__(kv, max_prompt, max_context)
        self.runtime_version = runtime_version("coremltools")
        self.interpreter = Interpreter(load_mlpackage(Path(package)))
        self.reset()

    def _reset_state(self) -> None:
        self.states = self.interpreter.new_states()

    def _predict(self, feeds: dict) -> dict:
        return self.interpreter.run(feeds, self.states if self.stateful else None)


class CoreMLRunner(_CacheRunner):
    kind = "coreml"
    runtime_name = "coremltools"

    def __init__(self, package: Path, kv: KvCacheInfo, max_prompt: int, max_context: int,
                 compute_units: str = "all"):
        ok, why = coreml_runtime_available()
        if not ok:
            raise UnsupportedError(f"cannot run Core ML here: {why}", ErrorCode.E_COREML_RUNTIME)
        import coremltools as ct

        super().__init__(kv, max_prompt, max_context)
        self.runtime_version = ct.__version__
        units = str(compute_units).upper()
        self.model = ct.models.MLModel(str(package), compute_units=ct.ComputeUnit[units])
        self.reset()

    def _reset_state(self) -> None:
        self.state = self.model.make_state()

    def _predict(self, feeds: dict) -> dict:
        return self.model.predict(feeds, state=self.state) if self.stateful else self.model.predict(feeds)


def _use_coreml(which: str) -> bool:
    """``which`` (or, for ``auto``, ``SLMPACK_COREML_RUNNER``): Core ML itself, or the interpreter."""
    which = (which if which != "auto" else os.environ.get(ENV) or "auto").lower()
    if which not in ("auto", "interpreter", "coreml"):
        raise BadInputError(f"{ENV}={which!r}: expected auto, interpreter or coreml", ErrorCode.E_CONFIG)
    return which == "coreml" or (which == "auto" and coreml_runtime_available()[0])


def open_coreml(pkg: Path, manifest: Manifest, which: str = "auto"):
    package, m = Path(pkg) / manifest.artifact, manifest.model
    if _use_coreml(which):
        return CoreMLRunner(package, manifest.kv_cache, m.max_prompt, m.max_context,
                            str(manifest.runtime.details.get("compute_units", "all")))
    return InterpreterRunner(package, manifest.kv_cache, m.max_prompt, m.max_context)


def open_predictor(package: Path, compute_units: str = "all", which: str = "auto") -> Callable[[dict], dict]:
    """A stateless ``predict(feeds) -> {output name: array}`` (encoder packages)."""
    if _use_coreml(which):
        ok, why = coreml_runtime_available()
        if not ok:
            raise UnsupportedError(f"cannot run Core ML here: {why}", ErrorCode.E_COREML_RUNTIME)
        import coremltools as ct

        return ct.models.MLModel(str(package), compute_units=ct.ComputeUnit[compute_units.upper()]).predict
    from ..mil import Interpreter, load_mlpackage

    return Interpreter(load_mlpackage(Path(package))).run
