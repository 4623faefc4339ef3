"""Tokenizer, held-out text and test-vector inputs for a model directory."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from slmpack.errors import BadInputError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json")


def demo_data_dir() -> Path:
    from importlib.resources import files

    return Path(str(files("slmpack") / "demo_data"))


def demo_model_dir() -> Path:
    from importlib.resources import files

    return Path(str(files("slmpack") / "demo_model"))


def load_tokenizer(model_dir: Path):
    path = Path(model_dir) / "tokenizer.json"
    if not path.is_file():
        return None
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises plain Exception subclasses
        raise BadInputError(f"{path}: cannot load tokenizer ({str(e).splitlines()[0]})", "E_TOKENIZER") from None


def generation_config(model_dir: Path, spec) -> dict:
    path = Path(model_dir) / "generation_config.json"
    gen = {}
    if path.is_file():
        try:
            gen = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise BadInputError(f"{path}: invalid JSON ({e})", "E_CONFIG_INVALID") from None
    eos = gen.get("eos_token_id", list(spec.eos_token_ids) or None)
    gen.setdefault("bos_token_id", spec.bos_token_id)
    gen["eos_token_id"] = eos
    return gen


def eos_ids(gen: dict) -> tuple[int, ...]:
    e = gen.get("eos_token_id")
    if e is None:
        return ()
    return (int(e),) if isinstance(e, int) else tuple(int(x) for x in e)


def heldout_tokens(tokenizer, vocab_size: int, n: int, text_path: Path | None) -> tuple[np.ndarray, str]:
    """At least n+1 held-out token ids, and a description of where they came from."""
    if tokenizer is not None:
        path = Path(text_path) if text_path else demo_data_dir() / "heldout.txt"
        if not path.is_file():
            raise BadInputError(f"{path}: evaluation text not found", "E_EVAL_TEXT")
        ids = np.array(tokenizer.encode(path.read_text(encoding="utf-8")).ids, dtype=np.int64)
        if len(ids) < n + 1:
            raise BadInputError(f"{path}: only {len(ids)} tokens, need {n + 1}", "E_EVAL_TEXT")
        ids = ids[ids < vocab_size]
        return ids[: n + 1], path.name
    rng = np.random.default_rng(0)
    return rng.integers(0, vocab_size, n + 1, dtype=np.int64), "random-ids (no tokenizer.json)"


def prompt_ids(tokenizer, text: str, vocab_size: int) -> np.ndarray:
    if tokenizer is None:
        return np.arange(1, 9, dtype=np.int64) % vocab_size
    ids = tokenizer.encode(text).ids
    if not ids:
        raise BadInputError("the validation prompt encodes to zero tokens", "E_CONFIG")
    return np.array(ids, dtype=np.int64)
