"""Fixtures for the device-test suite: one tiny ONNX package per session, the aarch64 sysroot
(qemu tests only: built once, cached under $SLMPACK_CACHE or ~/.cache/slmpack)."""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest


def _load_tinypkg():
    spec = importlib.util.spec_from_file_location("dt_tinypkg", Path(__file__).with_name("dt_tinypkg.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


dt_tinypkg = _load_tinypkg()


@pytest.fixture(scope="session")
def tinypkg_module():
    return dt_tinypkg


@pytest.fixture(scope="session")
def tiny_package(tmp_path_factory) -> Path:
    """A schema-v1 ONNX package (tiny random Llama-style decoder). Do not modify: copy it."""
    return dt_tinypkg.write_package(tmp_path_factory.mktemp("pkgs") / "tiny-onnx")


@pytest.fixture
def package_copy(tiny_package, tmp_path) -> Path:
    dst = tmp_path / tiny_package.name
    shutil.copytree(tiny_package, dst)
    return dst


@pytest.fixture
def tiny_model_dir(tmp_path) -> Path:
    return dt_tinypkg.write_model_dir(tmp_path / "tiny-model")


@pytest.fixture(scope="session")
def aarch64_sysroot():
    from slmpack.device_tests.sysroot import ensure_sysroot
    return ensure_sysroot()
