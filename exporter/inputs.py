"""Tokenizer, held-out text and test-vector inputs for a model directory."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from slmpack.bundled import demo_data_dir
from slmpack.errors import BadInputError
from slmpack import confine
from slmpack.exporter.checkpoint import as_root
from slmpack.exporter.config_checks import check_generation_config

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json")
MAX_TOKENIZER_BYTES = 512 << 20


def load_tokenizer(model_dir):
    root = as_root(model_dir)
    if not confine.exists(root, "tokenizer.json"):
        return None
    from tokenizers import Tokenizer

    data = confine.read_bytes(root, "tokenizer.json", MAX_TOKENIZER_BYTES)
    try:
        return Tokenizer.from_str(data.decode("utf-8"))
    except Exception as e:  # tokenizers raises plain Exception subclasses; bad UTF-8 too
        msg = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise BadInputError(f"{root.path / 'tokenizer.json'}: cannot load tokenizer ({msg})", "E_TOKENIZER") from None


def check_tokenizer_files(model_dir) -> None:
    """Preflight: every tokenizer-side file that will be read or copied is a confined regular file,
    and the JSON ones parse (typed errors before any slow work)."""
    root = as_root(model_dir)
    for name in (*TOKENIZER_FILES, "chat_template.jinja"):
        if confine.exists(root, name):
            if name.endswith(".json") and name != "tokenizer.json":
                confine.read_json(root, name)
            else:
                confine.open_inside(root, name).close()


def copy_tokenizer_files(model_dir, stage: Path, names=TOKENIZER_FILES) -> None:
    """Copy the present tokenizer files into the staging dir, read through the confined reader."""
    root = as_root(model_dir)
    for name in names:
        if confine.exists(root, name) and not (stage / name).exists():
            (stage / name).write_bytes(confine.read_bytes(root, name, MAX_TOKENIZER_BYTES))


def generation_config(model_dir, spec) -> dict:
    root = as_root(model_dir)
    gen = {}
    if confine.exists(root, "generation_config.json"):
        gen = confine.read_json(root, "generation_config.json")
        check_generation_config(gen, str(root.path / "generation_config.json"))
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
        ids = np.array(tokenizer.encode(read_eval_text(path)).ids, dtype=np.int64)
        if len(ids) < n + 1:
            raise BadInputError(f"{path}: only {len(ids)} tokens, need {n + 1}", "E_EVAL_TEXT")
        ids = ids[ids < vocab_size]
        return ids[: n + 1], path.name
    rng = np.random.default_rng(0)
    return rng.integers(0, vocab_size, n + 1, dtype=np.int64), "random-ids (no tokenizer.json)"


def read_eval_text(path: Path) -> str:
    """The held-out text: a readable regular UTF-8 file (checked in preflight too)."""
    confine.regular_file(path, "evaluation text", "E_EVAL_TEXT", "E_EVAL_TEXT")
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8")
    except OSError as e:
        raise BadInputError(f"{path}: cannot read evaluation text ({e.strerror})", "E_EVAL_TEXT") from None
    except UnicodeDecodeError as e:
        raise BadInputError(f"{path}: evaluation text is not UTF-8 ({e.reason})", "E_EVAL_TEXT") from None


def check_readable(path: Path, what: str, code: str) -> None:
    """A user-named input (file or directory) exists and can be read; FIFOs and devices refused."""
    import os
    import stat

    try:
        st = os.stat(path)
    except OSError as e:
        raise BadInputError(f"{what} {path}: not found ({e.strerror})", code) from None
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        raise BadInputError(f"{what} {path}: not a regular file or directory", code)
    if not os.access(path, os.R_OK | (os.X_OK if stat.S_ISDIR(st.st_mode) else 0)):
        raise BadInputError(f"{what} {path}: not readable", code)


def prompt_ids(tokenizer, text: str, vocab_size: int) -> np.ndarray:
    if tokenizer is None:
        return np.arange(1, 9, dtype=np.int64) % vocab_size
    ids = tokenizer.encode(text).ids
    if not ids:
        raise BadInputError("the validation prompt encodes to zero tokens", "E_CONFIG")
    return np.array(ids, dtype=np.int64)
