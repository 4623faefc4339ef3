"""The host's LiteRT runner is the runtime kit's adapter (``slmpack/runtime/adapters/tflite.py``):
host validation and the device runner run one code path."""
from __future__ import annotations

from pathlib import Path

from slmpack.runtime.adapters.tflite import DECODE, PREFILL_RE, TFLiteAdapter, interpreter_module, load_interpreter


class TFLiteRunner(TFLiteAdapter):
    def __init__(self, model_path: Path, threads: int = 0):
        super().__init__(Path(model_path).parent, None, threads, path=Path(model_path))


__all__ = ["TFLiteRunner", "load_interpreter", "interpreter_module", "PREFILL_RE", "DECODE"]
