"""Runner over ``executorch.runtime`` for model.pte (Runner protocol of targets/base.py).

The program is loaded with ``Verification.InternalConsistency`` (flatbuffer + internal offsets
checked on load). Prefill and decode both call ``forward(tokens [1,S], input_pos [S])``; the KV
cache lives in the program's mutable buffers, so the runner only tracks the next position.

``reset()`` really resets the cache: it reloads the program from the bytes held in memory and
loads ``forward`` again, which allocates fresh planned memory (the Python runtime, like
``extension/module``, allocates planned arenas zero-filled). We do not rely on it for
correctness, though: ExecuTorch declares a mutated buffer's initial contents meaningless
(``exir/emit/_emitter.py``), and stale rows past the current position are never used —
``llama::custom_sdpa`` reads only rows ``< start_pos + S`` and the decomposed attention masks
them with ``-inf`` (exact zero weight, provided the stale values are finite, which they are:
they were written by earlier steps or zero-filled on load).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from slmpack.errors import BadInputError, ToolchainError

METHOD = "forward"


def load_program(data: bytes, verify: bool = True):
    from executorch.runtime import Runtime, Verification

    from slmpack.targets.executorch.source_transforms.custom_sdpa import load_custom_ops

    load_custom_ops()  # registers the llama::custom_sdpa / update_cache kernels with the runtime

    rt = Runtime.get()
    level = Verification.InternalConsistency if verify else Verification.Minimal
    return rt.load_program(data, verification=level)


class ExecuTorchRunner:
    def __init__(self, model_path: Path, max_prompt: int, max_context: int):
        path = Path(model_path)
        try:
            self._data = path.read_bytes()
            self._load()
        except FileNotFoundError:
            raise BadInputError(f"{path}: no such file", "E_ARTIFACT_MISSING") from None
        except RuntimeError as e:  # the pybindings raise RuntimeError on invalid programs
            raise BadInputError(f"executorch cannot load {path.name}: {str(e).splitlines()[0]}",
                                "E_ARTIFACT_INVALID") from e
        self.max_prompt, self.max_context = max_prompt, max_context
        self.pos = 0

    def _load(self) -> None:
        self._program = load_program(self._data)
        self._method = self._program.load_method(METHOD)

    def reset(self) -> None:
        self._load()
        self.pos = 0

    def _run(self, ids: np.ndarray) -> np.ndarray:
        import torch

        s = int(ids.shape[0])
        if s < 1 or s > self.max_prompt:
            raise BadInputError(f"{s} tokens in one call; this program takes 1..{self.max_prompt}", "E_RUNNER_INPUT")
        if self.pos + s > self.max_context:
            raise BadInputError(f"sequence of {self.pos + s} exceeds max context {self.max_context}",
                                "E_CONTEXT_OVERFLOW")
        tokens = torch.from_numpy(np.ascontiguousarray(ids, dtype=np.int64))[None]
        pos = torch.arange(self.pos, self.pos + s, dtype=torch.long)
        try:
            out = self._method.execute([tokens, pos])
        except RuntimeError as e:
            raise ToolchainError(f"executorch forward failed: {str(e).splitlines()[0]}", "E_EXECUTORCH_RUN") from e
        self.pos += s
        return out[0][0].float().numpy()

    def prefill(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        chunks = [self._run(ids[i:i + self.max_prompt]) for i in range(0, len(ids), self.max_prompt)]
        return np.concatenate(chunks) if len(chunks) > 1 else chunks[0]

    def decode(self, token: int, pos: int) -> np.ndarray:
        if pos != self.pos:
            raise BadInputError(f"decode at position {pos}, cache holds {self.pos}", "E_RUNNER_POSITION")
        return self._run(np.array([token], dtype=np.int64))[0]
