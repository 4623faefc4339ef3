"""Exporting the same model twice gives byte-identical package files."""
from __future__ import annotations

from slmpack import api
from slmpack.config import ExportConfig, TraceConfig
from slmpack.package import hash_tree


def test_two_onnx_exports_are_byte_identical(tmp_path, tiny_llama):
    cfg = ExportConfig(trace=TraceConfig(max_context=64, max_prompt=32))
    a = api.export(tiny_llama, "onnx", tmp_path / "a", cfg)
    b = api.export(tiny_llama, "onnx", tmp_path / "b", cfg)
    assert hash_tree(a.path) == hash_tree(b.path)
    assert (a.path / "manifest.json").read_bytes() == (b.path / "manifest.json").read_bytes()
