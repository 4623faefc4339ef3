"""Reading weights from a local Hugging-Face-format directory, confined to it.

safetensors (single file or sharded with ``model.safetensors.index.json``) is the default, read by
our strict reader (``safetensors_reader``) from a descriptor opened by ``confine.open_inside``.
Pickle checkpoints (``*.bin``, ``*.pt``, ``*.pth``) are refused unless ``allow_pickle`` is set —
whatever names them, the index included — and even then they are read with
``torch.load(weights_only=True)`` (no code execution). Shard names are plain relative names.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import re
from pathlib import Path

import torch

from slmpack.errors import BadInputError
from slmpack import confine
from slmpack.confine import ModelRoot
from slmpack.exporter.safetensors_reader import FLOAT_DTYPES, load_tensors, read_header

# integer buffers older transformers versions saved beside the weights (BERT's
# ``embeddings.position_ids`` arange, ``token_type_ids`` zeros): derived from the config, never
# read by our modules; skipped (not refused) when they are integer tensors
INDEX_BUFFER = re.compile(r"(^|\.)(position_ids|token_type_ids)$")
INT_DTYPES = frozenset({"I64", "I32"})


def index_buffer(name: str, dtype: str) -> bool:
    return dtype in INT_DTYPES and bool(INDEX_BUFFER.search(name))

PICKLE_SUFFIXES = (".bin", ".pt", ".pth")
INDEX = "model.safetensors.index.json"
# files besides the weights that decide what the package does: all go into checkpoint_sha256
DIGESTED_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                  "special_tokens_map.json", "chat_template.jinja")


def as_root(model_dir) -> ModelRoot:
    return model_dir if isinstance(model_dir, ModelRoot) else ModelRoot(Path(model_dir))


def _refuse_pickle(root: ModelRoot, names: list[str]) -> None:
    raise BadInputError(
        f"{root.path}: pickle weights ({', '.join(names)}); pickle can execute code, so it is refused. "
        "Convert to safetensors, or pass --allow-pickle (loaded with torch.load(weights_only=True))",
        "E_PICKLE_REFUSED")


def _index_shards(root: ModelRoot) -> list[str]:
    index = confine.read_json(root, INDEX, "E_WEIGHTS_CORRUPT")
    wmap = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(wmap, dict) or not wmap:
        raise BadInputError(f"{root.path / INDEX}: invalid shard index (no weight_map object)", "E_WEIGHTS_CORRUPT")
    for v in wmap.values():
        confine.plain_name(v, f"{root.path / INDEX}: shard name")
    return sorted(set(wmap.values()))


def weight_files(model_dir, allow_pickle: bool = False) -> list[Path]:
    """The weight files to read (paths inside the root), checked: names confined, present, regular
    files, and the pickle gate applied to every one of them."""
    root = as_root(model_dir)
    if confine.exists(root, INDEX):
        names = _index_shards(root)
        missing = [n for n in names if not confine.exists(root, n)]
        if missing:
            raise BadInputError(f"{root.path}: shard(s) listed in the index are missing: {', '.join(missing)}",
                                "E_WEIGHTS_MISSING")
    else:
        entries = sorted(os.listdir(root.path))
        names = [n for n in entries if n.endswith(".safetensors")]
        if not names:
            names = [n for n in entries if Path(n).suffix in PICKLE_SUFFIXES]
            if not names:
                raise BadInputError(f"{root.path}: no weights found (*.safetensors)", "E_WEIGHTS_MISSING")
    pickles = [n for n in names if not n.endswith(".safetensors")]
    if pickles and not allow_pickle:
        _refuse_pickle(root, pickles)
    odd = [n for n in pickles if Path(n).suffix not in PICKLE_SUFFIXES]
    if odd:
        raise BadInputError(f"{root.path}: unknown weight file type: {', '.join(odd)}", "E_WEIGHTS_CORRUPT")
    for n in names:  # regular files inside the root, refused now (no FIFO blocks a later read)
        confine.open_inside(root, n).close()
    return [root.path / n for n in names]


def check_headers(model_dir, allow_pickle: bool = False) -> dict[str, tuple[int, ...]]:
    """Cheap preflight over every safetensors header: structure, and float dtypes only (the
    reference module's parameters are all floating point; an int-labelled weight is corrupt).
    Returns each safetensors tensor's shape by name."""
    root = as_root(model_dir)
    shapes: dict[str, tuple[int, ...]] = {}
    for path in weight_files(root, allow_pickle):
        if path.suffix != ".safetensors":
            continue
        with confine.open_inside(root, path.name) as f:
            _, infos = read_header(f, path.name)
        bad = [t.name for t in infos if t.dtype not in FLOAT_DTYPES and not index_buffer(t.name, t.dtype)]
        if bad:
            raise BadInputError(f"{path.name}: weight(s) {', '.join(bad[:3])} are not floating point "
                                f"({next(t.dtype for t in infos if t.name == bad[0])}); the config describes a "
                                "float model", "E_WEIGHTS_DTYPE")
        shapes.update((t.name, t.shape) for t in infos if not index_buffer(t.name, t.dtype))
    return shapes


def _load_pickle(root: ModelRoot, name: str) -> dict:
    with confine.open_inside(root, name) as f:
        part = torch.load(f, map_location="cpu", weights_only=True)
    if not isinstance(part, dict) or not all(isinstance(v, torch.Tensor) for v in part.values()):
        raise BadInputError(f"{name}: not a state dict of tensors", "E_WEIGHTS_CORRUPT")
    for k, v in part.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise BadInputError(f"{name}: tensor {k} has NaN or Inf values", "E_WEIGHTS_NONFINITE")
    return part


def load_state_dict(model_dir, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    root = as_root(model_dir)
    check_headers(root, allow_pickle)
    out: dict[str, torch.Tensor] = {}
    for path in weight_files(root, allow_pickle):
        try:
            if path.suffix == ".safetensors":
                with confine.open_inside(root, path.name) as f:
                    part = {k: v for k, v in load_tensors(f, path.name).items()
                            if v.is_floating_point() or not INDEX_BUFFER.search(k)}
            else:
                part = _load_pickle(root, path.name)
        except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError, TypeError) as e:
            raise BadInputError(f"{path.name}: cannot read weights ({type(e).__name__}: {e})".split("\n")[0][:300],
                                "E_WEIGHTS_CORRUPT") from None
        dup = set(part) & set(out)
        if dup:
            raise BadInputError(f"tensor(s) {sorted(dup)[:3]} appear in more than one shard", "E_WEIGHTS_CORRUPT")
        out.update(part)
    return out


def _sha256(root: ModelRoot, name: str) -> str:
    h = hashlib.sha256()
    with confine.open_inside(root, name) as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def checkpoint_digest(model_dir, allow_pickle: bool = False) -> str:
    """sha256 over config, generation config, tokenizer files, chat template and weight files
    (name + content hash, sorted by name): everything a package is built from."""
    root = as_root(model_dir)
    names = {p.name for p in weight_files(root, allow_pickle)}
    names |= {n for n in DIGESTED_FILES if confine.exists(root, n)}
    h = hashlib.sha256()
    for name in sorted(names):
        h.update(name.encode() + b"\0" + _sha256(root, name).encode() + b"\n")
    return h.hexdigest()
