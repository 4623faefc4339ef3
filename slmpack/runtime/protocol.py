"""The Runner protocol every host runner, device adapter and the eager reference implement."""
from __future__ import annotations

from typing import Protocol

import numpy as np


class Runner(Protocol):
    """``prefill`` feeds a chunk of at most ``max_prompt`` tokens at the current position (0 after
    ``reset``) and returns its logits ``[S, V]`` float32; ``decode`` feeds one token at ``pos``
    (which must be the current position) and returns ``[V]``."""

    max_prompt: int
    max_context: int

    def prefill(self, ids: np.ndarray) -> np.ndarray: ...
    def decode(self, token: int, pos: int) -> np.ndarray: ...
    def reset(self) -> None: ...


__all__ = ["Runner"]
