"""Fixtures for the device-test suite: the exporter's own packages of the tiny Llama (ONNX and
TFLite, one export each per session), the demo model's TFLite package, and the aarch64 sysroot
(qemu tests only: built once, cached under $SLMPACK_CACHE or ~/.cache/slmpack)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

TINY_TRACE = {"max_context": 64, "max_prompt": 32}


def _export_tiny(model_dir: Path, target: str, out: Path):
    from slmpack import api
    from slmpack.config import ExportConfig, TraceConfig

    return api.export(model_dir, target, out, ExportConfig(trace=TraceConfig(**TINY_TRACE)))


@pytest.fixture(scope="session")
def tiny_package(tiny_llama, tmp_path_factory) -> Path:
    """slmpack's ONNX package of the tiny Llama (max_context 64). Do not modify: copy it."""
    return _export_tiny(tiny_llama, "onnx", tmp_path_factory.mktemp("pkgs") / "tiny-onnx").path


@pytest.fixture
def package_copy(tiny_package, tmp_path) -> Path:
    dst = tmp_path / tiny_package.name
    shutil.copytree(tiny_package, dst)
    return dst


@pytest.fixture(scope="session")
def aarch64_sysroot():
    from slmpack.device_tests.sysroot import ensure_sysroot
    return ensure_sysroot()


@pytest.fixture(scope="session")
def tiny_tflite_package(tiny_llama, tmp_path_factory):
    """slmpack's TFLite package of the tiny Llama (prefill_8/prefill_32 + decode, max_context 64)."""
    return _export_tiny(tiny_llama, "tflite", tmp_path_factory.mktemp("pkgs") / "tiny-tflite")


@pytest.fixture(scope="session")
def demo_tflite_package(tmp_path_factory):
    """The bundled demo model's TFLite package (about a minute to export)."""
    from slmpack import api

    return api.export(None, "tflite", tmp_path_factory.mktemp("demo") / "tflite")


# the encoder fixtures (random tiny checkpoints + the MiniLM-shaped sentence-transformers dir)
from tests.encoders.conftest import minilm_st, tiny_bert_cls, tiny_st, tokenizer_dir  # noqa: E402,F401


@pytest.fixture(scope="session")
def encoder_package(request, tmp_path_factory):
    """``encoder_package(model_fixture, target)``: slmpack's validated package of that encoder
    fixture for that target, exported once per session. Do not modify: copy it."""
    from slmpack import api

    made: dict = {}

    def get(model: str, target: str):
        if (model, target) not in made:
            out = tmp_path_factory.mktemp("encpkgs") / f"{model}-{target}"
            pkg = api.export(request.getfixturevalue(model), target, out)
            assert pkg.passed, pkg.validation
            made[model, target] = pkg
        return made[model, target]

    return get
