"""Fixtures for the runtime kit's tests: the tiny Llama's LiteRT package (one export per session;
LiteRT is the target whose manifests and runtime are complete on every CI machine)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def kit_package(tiny_llama, tmp_path_factory) -> Path:
    """Do not modify: copy it (``pkg_copy``)."""
    from slmpack import api
    from slmpack.config import ExportConfig, TraceConfig

    out = tmp_path_factory.mktemp("kit") / "tiny-tflite"
    return api.export(tiny_llama, "tflite", out, ExportConfig(trace=TraceConfig(max_context=64, max_prompt=32))).path


@pytest.fixture
def pkg_copy(kit_package, tmp_path) -> Path:
    dst = tmp_path / "pkg"
    shutil.copytree(kit_package, dst)
    return dst


@pytest.fixture(scope="session")
def quant_model(tmp_path_factory) -> Path:
    """The tiny Llama with a character tokenizer (tests/quant's model): text prompts work."""
    from tests.quant.conftest import write_quant_model

    return write_quant_model(tmp_path_factory.mktemp("qmodel") / "tiny")
