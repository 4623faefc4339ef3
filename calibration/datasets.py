"""Calibration text: read documents, tokenize, pack into fixed windows, sample deterministically.

Sources (``CalibrationConfig.format``):

* ``text``: one UTF-8 file, one document;
* ``jsonl``: one JSON object per non-blank line, the document in ``text_field``;
* ``directory``: every ``*.txt`` file directly inside the directory, in sorted name order, one
  document each.

Documents that are empty or whitespace-only are skipped. Each document's token ids are followed
by the EOS id, the stream is cut into consecutive non-overlapping windows of ``window`` tokens
(the incomplete tail is dropped), and ``num_windows`` of them are drawn without replacement with
``torch.randperm`` seeded by ``seed`` (all windows, in sampled order, if fewer exist).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer

from slmpack.errors import BadInputError
from slmpack.exporter.checkpoint import as_root

from .schemes import TextFormat


def _field_error(field: str, message: str) -> BadInputError:
    return BadInputError(f"CalibrationConfig.{field}: {message}", "E_CALIB_CONFIG",
                         details={"field": field})


def _positive_int(obj, field: str, minimum: int) -> None:
    v = getattr(obj, field)
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise _field_error(field, f"must be an int >= {minimum}, got {v!r}")


@dataclass(frozen=True)
class CalibrationConfig:
    source: Path
    format: TextFormat = TextFormat.TEXT
    text_field: str = "text"
    window: int = 512
    num_windows: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.source, (str, Path)) or not str(self.source):
            raise _field_error("source", f"must be a path, got {self.source!r}")
        object.__setattr__(self, "source", Path(self.source))
        try:
            object.__setattr__(self, "format", TextFormat(self.format))
        except ValueError:
            allowed = ", ".join(f.value for f in TextFormat)
            raise _field_error("format", f"{self.format!r} is not one of: {allowed}") from None
        if not isinstance(self.text_field, str) or not self.text_field:
            raise _field_error("text_field", f"must be a non-empty string, got "
                                             f"{self.text_field!r}")
        _positive_int(self, "window", 2)
        _positive_int(self, "num_windows", 1)
        _positive_int(self, "seed", 0)


def _decode(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadInputError(f"{path}: not valid UTF-8 (byte offset {exc.start})",
                            "E_CALIB_ENCODING",
                            details={"path": str(path), "offset": exc.start}) from None


def _jsonl_documents(path: Path, field: str) -> list[str]:
    docs = []
    for lineno, line in enumerate(_decode(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BadInputError(f"{path}:{lineno}: invalid JSON: {exc.msg}", "E_CALIB_JSONL_PARSE",
                                details={"path": str(path), "line": lineno}) from None
        if not isinstance(obj, dict) or not isinstance(obj.get(field), str):
            what = "missing" if not isinstance(obj, dict) or field not in obj else "not a string"
            raise BadInputError(f"{path}:{lineno}: field {field!r} is {what}",
                                "E_CALIB_JSONL_FIELD",
                                details={"path": str(path), "line": lineno, "field": field})
        docs.append(obj[field])
    return docs


def read_documents(config: CalibrationConfig) -> list[str]:
    """The non-empty documents of ``config.source`` in a deterministic order."""
    src = config.source
    if not src.exists():
        raise BadInputError(f"calibration source not found: {src}", "E_CALIB_PATH_MISSING",
                            details={"path": str(src)})
    if config.format is TextFormat.DIRECTORY:
        if not src.is_dir():
            raise BadInputError(f"calibration source is not a directory: {src}",
                                "E_CALIB_PATH_MISSING", details={"path": str(src)})
        docs = [_decode(p) for p in sorted(src.iterdir()) if p.suffix == ".txt" and p.is_file()]
    elif not src.is_file():
        raise BadInputError(f"calibration source is not a file: {src}", "E_CALIB_PATH_MISSING",
                            details={"path": str(src)})
    elif config.format is TextFormat.JSONL:
        docs = _jsonl_documents(src, config.text_field)
    else:
        docs = [_decode(src)]
    docs = [d for d in docs if d.strip()]
    if not docs:
        raise BadInputError(f"calibration source has no text: {src}", "E_CALIB_EMPTY",
                            details={"path": str(src)})
    return docs


def _eos_from_configs(model_dir, tokenizer: Tokenizer) -> int | None:
    from slmpack import confine

    root = as_root(model_dir)
    for fname in ("generation_config.json", "config.json"):
        if confine.exists(root, fname):
            cfg = confine.read_json(root, fname)
            eos = cfg.get("eos_token_id") if isinstance(cfg, dict) else None
            if isinstance(eos, list) and eos:
                eos = eos[0]
            if isinstance(eos, int) and not isinstance(eos, bool):
                return eos
    if confine.exists(root, "tokenizer_config.json"):
        cfg = confine.read_json(root, "tokenizer_config.json")
        tok = cfg.get("eos_token") if isinstance(cfg, dict) else None
        tok = tok.get("content") if isinstance(tok, dict) else tok
        if isinstance(tok, str):
            return tokenizer.token_to_id(tok)
    return None


def load_tokenizer(model_dir) -> tuple[Tokenizer, int]:
    """``tokenizer.json`` of a model directory and its EOS id (from generation_config.json,
    config.json, then tokenizer_config.json)."""
    from slmpack.exporter.inputs import load_tokenizer as load_confined

    root = as_root(model_dir)
    path = root.path / "tokenizer.json"
    tokenizer = load_confined(root)  # read through the confined reader (no symlinks out, no FIFOs)
    if tokenizer is None:
        raise BadInputError(f"no tokenizer.json in {root.path}", "E_CALIB_TOKENIZER",
                            details={"path": str(path)})
    eos = _eos_from_configs(model_dir, tokenizer)
    if eos is None:
        raise BadInputError(f"cannot determine the EOS token id of {model_dir}", "E_CALIB_EOS")
    return tokenizer, eos


def tokenize_documents(docs: list[str], tokenizer: Tokenizer, eos_id: int) -> torch.Tensor:
    """One int64 stream: each document's ids (no special tokens added) followed by ``eos_id``."""
    stream: list[int] = []
    for enc in tokenizer.encode_batch(docs, add_special_tokens=False):
        stream.extend(enc.ids)
        stream.append(eos_id)
    return torch.tensor(stream, dtype=torch.long)


def pack_windows(ids: torch.Tensor, window: int) -> torch.Tensor:
    """Consecutive non-overlapping windows [n, window]; the incomplete tail is dropped."""
    n = ids.numel() // window
    if n == 0:
        raise BadInputError(f"calibration text has {ids.numel()} tokens, fewer than one window "
                            f"of {window}", "E_CALIB_TOO_FEW_TOKENS",
                            details={"tokens": int(ids.numel()), "window": window})
    return ids[: n * window].reshape(n, window).clone()


def sample_windows(windows: torch.Tensor, num: int, seed: int) -> torch.Tensor:
    """``min(num, len(windows))`` windows drawn without replacement, deterministic in ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(windows.shape[0], generator=gen)[:num]
    return windows[order].contiguous()


def load_calibration_windows(config: CalibrationConfig, tokenizer: Tokenizer,
                             eos_id: int) -> torch.Tensor:
    """LongTensor [min(num_windows, available), window] ready for ``build_plan``."""
    ids = tokenize_documents(read_documents(config), tokenizer, eos_id)
    return sample_windows(pack_windows(ids, config.window), config.num_windows, config.seed)
