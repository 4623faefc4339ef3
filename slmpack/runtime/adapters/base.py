"""Position bookkeeping shared by the adapters."""
from __future__ import annotations

from ..errors import BadInputError, ErrorCode


class Positions:
    """Tracks the next position; checks chunk sizes and the context bound before a call."""

    def __init__(self, max_prompt: int, max_context: int):
        self.max_prompt, self.max_context = int(max_prompt), int(max_context)
        self.pos = 0

    def check_chunk(self, n: int) -> None:
        if not 1 <= n <= self.max_prompt:
            raise BadInputError(f"chunk of {n} tokens: this package takes 1..{self.max_prompt} per call",
                                ErrorCode.E_RUNNER_CHUNK)
        if self.pos + n > self.max_context:
            raise BadInputError(f"sequence of {self.pos + n} exceeds max context {self.max_context}",
                                ErrorCode.E_CONTEXT_OVERFLOW)

    def check_decode(self, pos: int) -> None:
        if pos != self.pos:
            raise BadInputError(f"decode at position {pos}, cache holds {self.pos}", ErrorCode.E_RUNNER_POSITION)


def runtime_version(module: str) -> str:
    try:
        from importlib.metadata import version
        return version(module.replace("_", "-"))
    except Exception:  # noqa: BLE001 - the version is informational
        return "?"
