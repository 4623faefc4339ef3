"""ExecuTorch adapter over ``executorch.runtime`` (model.pte, the KV cache in mutable buffers).

The program is loaded with ``Verification.InternalConsistency``. Prefill and decode both call
``forward(tokens [1, S] int64, input_pos [S] int64)``. ExecuTorch's Python pybindings import
torch and take torch tensors (``executorch/extension/pybindings/portable_lib.py``: ``import
torch``), so on a device this adapter needs the aarch64 torch wheel: torch here is part of the
format's runtime, imported by this adapter only. ``reset()`` reloads the program (fresh planned
memory); stale rows past the position are never read (custom_sdpa reads rows < pos + S).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import BadInputError, ErrorCode, ToolchainError
from .base import Positions, runtime_version

METHOD = "forward"


def load_program(data: bytes, verify: bool = True):
    try:
        from executorch.runtime import Runtime, Verification
    except ImportError as exc:
        raise BadInputError(f"executorch.runtime is not importable: {exc}", ErrorCode.E_RUNTIME_MISSING) from None
    try:  # the llama::custom_sdpa / update_cache kernels our programs use
        from executorch.extension.llm.custom_ops import custom_ops  # noqa: F401
    except ImportError as exc:
        raise BadInputError(f"executorch's LLM custom ops are not importable: {exc}",
                            ErrorCode.E_RUNTIME_MISSING) from None
    level = Verification.InternalConsistency if verify else Verification.Minimal
    return Runtime.get().load_program(data, verification=level)


class ExecuTorchAdapter(Positions):
    """``path``: the model.pte; ``max_prompt`` / ``max_context``: the program's bounds (manifest ``model``)."""

    def __init__(self, path: Path, max_prompt: int, max_context: int):
        super().__init__(max_prompt, max_context)
        path = Path(path)
        self.runtime_name, self.runtime_version = "executorch", runtime_version("executorch")
        try:
            self._data = path.read_bytes()
        except FileNotFoundError:
            raise BadInputError(f"{path}: no such file", ErrorCode.E_ARTIFACT_MISSING) from None
        try:
            self._load()
        except RuntimeError as exc:  # the pybindings raise RuntimeError on invalid programs
            raise BadInputError(f"executorch cannot load {path.name}: {str(exc).splitlines()[0]}",
                                ErrorCode.E_ARTIFACT_INVALID) from None

    def _load(self) -> None:
        self._method = load_program(self._data).load_method(METHOD)
        self.pos = 0

    def reset(self) -> None:
        self._load()

    def _run(self, ids: np.ndarray) -> np.ndarray:
        import torch  # the pybindings' tensor type

        self.check_chunk(len(ids))
        tokens = torch.from_numpy(np.ascontiguousarray(ids, dtype=np.int64))[None]
        pos = torch.arange(self.pos, self.pos + len(ids), dtype=torch.long)
        try:
            out = self._method.execute([tokens, pos])
        except RuntimeError as exc:
            raise ToolchainError(f"executorch forward failed: {str(exc).splitlines()[0]}",
                                 ErrorCode.E_EXECUTORCH_RUN) from None
        self.pos += len(ids)
        return out[0][0].float().numpy()

    def prefill(self, ids) -> np.ndarray:
        return self._run(np.asarray(ids, dtype=np.int64))

    def decode(self, token: int, pos: int) -> np.ndarray:
        self.check_decode(pos)
        return self._run(np.array([int(token)], dtype=np.int64))[0]
