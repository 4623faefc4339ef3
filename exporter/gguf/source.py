"""A ``.gguf`` file as a model directory: materialised into a private temporary directory that the
normal pipeline exports, removed afterwards whatever happens.

The directory (named after the file, so the manifest's ``model_dir_name`` is ``NAME.gguf``) holds
``config.json``, ``model.safetensors`` (float32: exact for F32/F16/BF16, the ``gguf`` package's
dequantization for block types), the tokenizer files, ``chat_template.jinja`` and
``generation_config.json``. With ``--quant from-gguf`` a sibling ``from-gguf/`` folder holds the
QuantPlan made of the file's own blocks (``exporter/gguf/plan.py``), which the export then reuses
as it reuses any calibrated plan. Cheap refusals (architecture, tokenizer, from-gguf types) come
before any tensor is dequantized.
"""
from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from slmpack.exporter.gguf import to_hf
from slmpack.exporter.gguf.reader import open_gguf
from slmpack.exporter.gguf.tokenizer import tokenizer_files

PLAN_FOLDER = "from-gguf"


@dataclass(frozen=True)
class GgufSummary:
    """What the manifest records about the source file."""

    file: str
    sha256: str
    architecture: str
    tensor_types: tuple[tuple[str, int], ...]   # (GGML type name, tensor count), sorted
    from_gguf: bool

    def to_json(self) -> dict:
        return {"file": self.file, "sha256": self.sha256, "architecture": self.architecture,
                "tensor_types": dict(self.tensor_types), "from_gguf": self.from_gguf}


@dataclass(frozen=True)
class GgufSource:
    model_dir: Path
    plan_dir: Path | None
    summary: GgufSummary


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _materialise(g, into: Path, from_gguf: bool) -> Path | None:
    from safetensors.numpy import save_file

    from slmpack.exporter.spec import spec_from_config

    cfg = to_hf.hf_config(g)
    to_hf.name_map(g, cfg)
    spec = spec_from_config(cfg)
    tok = tokenizer_files(g)
    plan_dir = None
    if from_gguf:
        from slmpack.exporter.gguf.plan import from_gguf_plan
        from slmpack.exporter.quantize_stage import model_layout

        plan_dir = into.parent / PLAN_FOLDER
        from_gguf_plan(g, cfg, model_layout(spec)).save(plan_dir)
    into.mkdir()
    _write_json(into / "config.json", cfg)
    if tok.tokenizer_json is not None:
        (into / "tokenizer.json").write_text(tok.tokenizer_json, encoding="utf-8")
        _write_json(into / "tokenizer_config.json", tok.tokenizer_config)
        _write_json(into / "generation_config.json", tok.generation_config)
    if tok.chat_template is not None:
        (into / "chat_template.jinja").write_text(tok.chat_template, encoding="utf-8")
    save_file(dict(to_hf.state_dict(g, cfg)), str(into / "model.safetensors"), metadata={"format": "pt"})
    return plan_dir


@contextlib.contextmanager
def materialised(path: Path, from_gguf: bool = False) -> Iterator[GgufSource]:
    path = Path(path)
    tmp = Path(tempfile.mkdtemp(prefix="slmpack-gguf-"))
    try:
        with open_gguf(path) as g:
            model_dir = tmp / path.name
            plan_dir = _materialise(g, model_dir, from_gguf)
            types = Counter(t.qtype.name for t in g.tensors.values())
            summary = GgufSummary(path.name, g.sha256, to_hf.architecture(g), tuple(sorted(types.items())), from_gguf)
        yield GgufSource(model_dir, plan_dir, summary)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def gguf_spec(path: Path):
    """The file's ModelSpec from its metadata and tensor shapes alone (``slmpack fit``, ``--device``)."""
    from slmpack.exporter.spec import spec_from_config

    with open_gguf(path) as g:
        cfg = to_hf.hf_config(g)
        to_hf.name_map(g, cfg)
        return spec_from_config(cfg)
