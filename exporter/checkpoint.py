"""Reading weights from a local Hugging-Face-format directory.

safetensors (single file or sharded with ``model.safetensors.index.json``) is the default.
Pickle checkpoints (``*.bin``, ``*.pt``, ``*.pth``) are refused unless ``allow_pickle`` is set,
and even then they are read with ``torch.load(weights_only=True)`` (no code execution).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from slmpack.errors import BadInputError
from slmpack.package import sha256_file as _sha256

PICKLE_SUFFIXES = (".bin", ".pt", ".pth")


def weight_files(model_dir: Path, allow_pickle: bool = False) -> list[Path]:
    model_dir = Path(model_dir)
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, AttributeError) as e:
            raise BadInputError(f"{index}: invalid shard index ({e})", "E_WEIGHTS_CORRUPT") from None
        paths = [model_dir / s for s in shards]
        missing = [p.name for p in paths if not p.is_file()]
        if missing:
            raise BadInputError(f"{model_dir}: shard(s) listed in the index are missing: {', '.join(missing)}",
                                "E_WEIGHTS_MISSING")
        return paths
    single = sorted(model_dir.glob("*.safetensors"))
    if single:
        return single
    pickles = sorted(p for p in model_dir.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        if not allow_pickle:
            raise BadInputError(
                f"{model_dir}: only pickle weights ({', '.join(p.name for p in pickles)}); pickle can execute "
                "code, so it is refused. Convert to safetensors, or pass --allow-pickle "
                "(loaded with torch.load(weights_only=True))", "E_PICKLE_REFUSED")
        return pickles
    raise BadInputError(f"{model_dir}: no weights found (*.safetensors)", "E_WEIGHTS_MISSING")


def load_state_dict(model_dir: Path, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    out: dict[str, torch.Tensor] = {}
    for path in weight_files(model_dir, allow_pickle):
        try:
            if path.suffix == ".safetensors":
                part = load_file(str(path))
            else:
                part = torch.load(str(path), map_location="cpu", weights_only=True)
                if not isinstance(part, dict):
                    raise BadInputError(f"{path.name}: not a state dict", "E_WEIGHTS_CORRUPT")
        except SafetensorError as e:
            raise BadInputError(f"{path.name}: corrupt or truncated safetensors ({e})", "E_WEIGHTS_CORRUPT") from None
        except (OSError, RuntimeError, EOFError, ValueError) as e:
            raise BadInputError(f"{path.name}: cannot read weights ({type(e).__name__}: {e})".split("\n")[0],
                                "E_WEIGHTS_CORRUPT") from None
        dup = set(part) & set(out)
        if dup:
            raise BadInputError(f"tensor(s) {sorted(dup)[:3]} appear in more than one shard", "E_WEIGHTS_CORRUPT")
        out.update(part)
    return out


def checkpoint_digest(model_dir: Path, allow_pickle: bool = False) -> str:
    """sha256 over config.json and the weight files (name + content hash, sorted)."""
    model_dir = Path(model_dir)
    h = hashlib.sha256()
    for path in sorted([model_dir / "config.json", *weight_files(model_dir, allow_pickle)]):
        h.update(path.name.encode() + b"\0" + _sha256(path).encode() + b"\n")
    return h.hexdigest()
