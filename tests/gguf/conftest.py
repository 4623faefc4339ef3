"""GGUF files written in the tests from tiny checkpoints (no committed binaries)."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def instruct(tmp_path_factory) -> Path:
    """The tiny Llama instruct checkpoint: byte-level BPE + two chat specials, ChatML template, two stops."""
    from tests.chat_models import write_tiny_instruct

    return write_tiny_instruct(tmp_path_factory.mktemp("gguf-src") / "instruct")


@pytest.fixture(scope="session")
def gguf_of(instruct, tmp_path_factory):
    """``gguf_of("Q8_0")``: the instruct checkpoint as a GGUF of that type (written once)."""
    from gguf.constants import GGMLQuantizationType as T

    from tests.gguf.writer import write_gguf

    root, made = tmp_path_factory.mktemp("gguf-files"), {}

    def get(qtype: str) -> Path:
        if qtype not in made:
            made[qtype] = write_gguf(instruct, root / f"instruct-{qtype}.gguf", T[qtype])
        return made[qtype]

    return get
