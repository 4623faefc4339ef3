"""The encoder ladder's held-out sentence set (slmpack/demo_data/encoder_sentences.txt, written by
scripts/make_encoder_sentences.py): one sentence per line, a literal backslash-n is a newline."""
from __future__ import annotations

from pathlib import Path

from slmpack.errors import BadInputError

SENTENCES_FILE = "encoder_sentences.txt"


def load_sentences(path: Path | None = None) -> tuple[list[str], str]:
    """The sentences and where they came from (a file name, for the manifest)."""
    if path is None:
        from slmpack.bundled import demo_data_dir

        path = demo_data_dir() / SENTENCES_FILE
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: sentence file not found", "E_EVAL_TEXT")
    lines = [ln.replace("\\n", "\n") for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if len(lines) < 6:
        raise BadInputError(f"{path}: {len(lines)} sentences, need at least 6 (top-5 neighbours)", "E_EVAL_TEXT")
    return lines, path.name
