"""ExecuTorch decoder adapter over the torch-free ``libslm_et.so`` (``runtime/native_et.py``).

Selected by ``open_runner`` when ``SLMPACK_ET_LIB`` names the library. The same calls and position
rules as the Python adapter: ``forward(tokens [1, S] int64, input_pos [S] int64)``; ``reset()``
reloads the program (fresh planned memory).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..native_et import NativeProgram
from .base import Positions

METHOD = "forward"


class NativeExecuTorchAdapter(Positions):
    """``path``: the model.pte; ``lib``: libslm_et.so (default ``$SLMPACK_ET_LIB``)."""

    runtime_name = "executorch"

    def __init__(self, path: Path, max_prompt: int, max_context: int, lib: str | None = None):
        super().__init__(max_prompt, max_context)
        self._path, self._lib = Path(path), lib
        self._load()
        self.runtime_version = self._program.version

    def _load(self) -> None:
        self._program = NativeProgram(self._path, self._lib)
        self._program.load_method(METHOD)
        self.pos = 0

    def reset(self) -> None:
        self._program.close()
        self._load()

    def _run(self, ids: np.ndarray) -> np.ndarray:
        self.check_chunk(len(ids))
        pos = np.arange(self.pos, self.pos + len(ids), dtype=np.int64)
        out = self._program.run(METHOD, [ids[None], pos])
        self.pos += len(ids)
        return out[0]

    def prefill(self, ids) -> np.ndarray:
        return self._run(np.asarray(ids, dtype=np.int64))

    def decode(self, token: int, pos: int) -> np.ndarray:
        self.check_decode(pos)
        return self._run(np.array([int(token)], dtype=np.int64))[0]
