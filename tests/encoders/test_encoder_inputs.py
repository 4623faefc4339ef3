"""Encoder checkpoints as they are shipped: integer index buffers saved by older transformers, and
``--force`` over an existing encoder package."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import slmpack
from slmpack.errors import SlmpackError
from slmpack.exporter.checkpoint import check_headers, load_state_dict


def _with_extra(src, dst, name, value):
    shutil.copytree(src, dst)
    t = load_file(str(dst / "model.safetensors"))
    t[name] = value
    save_file(t, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


def test_int64_position_ids_buffer_is_skipped(tiny_bert, tmp_path):
    """all-MiniLM-L6-v2 as shipped (transformers 4.8) stores embeddings.position_ids (int64 arange)."""
    d = _with_extra(tiny_bert, tmp_path / "m", "embeddings.position_ids", np.arange(512, dtype=np.int64)[None])
    assert "embeddings.position_ids" not in check_headers(d)
    assert "embeddings.position_ids" not in load_state_dict(d)
    pkg = slmpack.export(d, target="onnx", out=tmp_path / "pkg")
    assert pkg.passed, pkg.validation


def test_other_integer_tensors_are_still_refused(tiny_bert, tmp_path):
    d = _with_extra(tiny_bert, tmp_path / "m", "encoder.layer.0.attention.self.query.weight",
                    np.zeros((32, 32), dtype=np.int64))
    with pytest.raises(SlmpackError) as e:
        load_state_dict(d)
    assert e.value.code == "E_WEIGHTS_DTYPE"


def test_force_replaces_an_encoder_package(tiny_bert, tmp_path):
    out = tmp_path / "pkg"
    first = slmpack.export(tiny_bert, target="onnx", out=out)
    from slmpack.config import ExportConfig

    again = slmpack.export(tiny_bert, target="onnx", out=out, config=ExportConfig(force=True))
    assert again.passed and again.manifest["files"] == first.manifest["files"]
