"""Runners for Core ML packages, behind the spine's Runner protocol.

* ``InterpreterRunner`` executes the package with our numpy MIL interpreter (any OS).
* ``CoreMLRunner`` executes it with Core ML itself (``coremltools.models.MLModel.predict``; macOS
  only, where ``coremltools.libcoremlpython`` exists).

``make_runner`` picks Core ML on macOS and the interpreter elsewhere; ``SLMPACK_COREML_RUNNER``
(``auto`` | ``interpreter`` | ``coreml``) overrides the choice.

Both feed the same program: ``tokens`` [1, S] int32 and ``input_pos`` [S] int32 (consecutive
positions), prompt chunks of 1..max_prompt tokens, decode as S = 1. The KV cache is either Core ML
state (held by the runtime) or fixed-size input/output arrays the runner passes back in.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from slmpack.errors import BadInputError, UnsupportedError
from slmpack.targets.coreml import names

ENV = "SLMPACK_COREML_RUNNER"


def coreml_runtime_available() -> tuple[bool, str]:
    """(available, reason). Core ML runs only on macOS with coremltools' native extension."""
    if sys.platform != "darwin":
        return False, f"Core ML runs only on macOS (this is {sys.platform})"
    try:
        import coremltools.libcoremlpython  # noqa: F401
    except ImportError as e:
        return False, f"coremltools.libcoremlpython is not importable ({e})"
    return True, "macOS with coremltools.libcoremlpython"


class _CacheRunner:
    """Position bookkeeping and the KV cache round trip; subclasses provide ``_predict``."""

    def __init__(self, manifest: dict):
        m, kv = manifest["model"], manifest["kv_cache"]
        self.max_prompt, self.max_context = int(m["max_prompt"]), int(m["max_context"])
        self.stateful = kv["kind"] == "state"
        self.cache_names = list(kv["names"])
        self.cache_dtype = np.dtype(kv["dtype"])
        self.cache_shape = tuple(kv["shape"])

    def reset(self) -> None:
        self.pos = 0
        if self.stateful:
            self._reset_state()
        else:
            self.caches = {n: np.zeros(self.cache_shape, self.cache_dtype) for n in self.cache_names}

    def _run(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids).reshape(-1)
        s = len(ids)
        if not 1 <= s <= self.max_prompt:
            raise BadInputError(f"chunk of {s} tokens: the package takes 1..{self.max_prompt} per call",
                                "E_RUNNER_CHUNK")
        if self.pos + s > self.max_context:
            raise BadInputError(f"sequence of {self.pos + s} exceeds max context {self.max_context}",
                                "E_CONTEXT_OVERFLOW")
        feeds = {names.TOKENS: ids.astype(np.int32)[None],
                 names.POSITIONS: np.arange(self.pos, self.pos + s, dtype=np.int32)}
        if not self.stateful:
            feeds.update(self.caches)
        out = self._predict(feeds)
        if not self.stateful:
            self.caches = {n: np.asarray(out[names.cache_out_name(n)], self.cache_dtype) for n in self.cache_names}
        self.pos += s
        return np.asarray(out[names.LOGITS], dtype=np.float32)[0]

    def prefill(self, ids: np.ndarray) -> np.ndarray:
        return self._run(ids)

    def decode(self, token: int, pos: int) -> np.ndarray:
        if pos != self.pos:
            raise BadInputError(f"decode at position {pos}, cache holds {self.pos}", "E_RUNNER_POSITION")
        return self._run(np.array([token]))[0]


class InterpreterRunner(_CacheRunner):
    kind = "mil-interpreter"

    def __init__(self, package: Path, manifest: dict):
        from slmpack.runtime.mil import Interpreter, load_mlpackage

        super().__init__(manifest)
        self.interpreter = Interpreter(load_mlpackage(Path(package)))
        self.reset()

    def _reset_state(self) -> None:
        self.states = self.interpreter.new_states()

    def _predict(self, feeds: dict) -> dict:
        return self.interpreter.run(feeds, self.states if self.stateful else None)


class CoreMLRunner(_CacheRunner):
    kind = "coreml"

    def __init__(self, package: Path, manifest: dict):
        ok, why = coreml_runtime_available()
        if not ok:
            raise UnsupportedError(f"cannot run Core ML here: {why}", "E_COREML_RUNTIME")
        import coremltools as ct

        super().__init__(manifest)
        units = manifest["runtime"].get("compute_units", "all").upper()
        self.model = ct.models.MLModel(str(package), compute_units=getattr(ct.ComputeUnit, units))
        self.reset()

    def _reset_state(self) -> None:
        self.state = self.model.make_state()

    def _predict(self, feeds: dict) -> dict:
        if self.stateful:
            return self.model.predict(feeds, state=self.state)
        return self.model.predict(feeds)


def make_runner(pkg_dir: Path, manifest: dict, which: str | None = None):
    which = (which or os.environ.get(ENV) or "auto").lower()
    if which not in ("auto", "interpreter", "coreml"):
        raise BadInputError(f"{ENV}={which!r}: expected auto, interpreter or coreml", "E_CONFIG")
    package = Path(pkg_dir) / manifest["artifact"]
    if which == "coreml" or (which == "auto" and coreml_runtime_available()[0]):
        return CoreMLRunner(package, manifest)
    return InterpreterRunner(package, manifest)
