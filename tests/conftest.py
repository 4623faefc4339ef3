"""Shared fixtures: tiny checkpoints and one ONNX export of the demo model per session."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.tiny_models import write_tiny_model


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny") / "llama", "llama")


@pytest.fixture(scope="session")
def demo_onnx_package(tmp_path_factory):
    from slmpack import api

    return api.export(None, "onnx", tmp_path_factory.mktemp("demo") / "onnx")


def pytest_collection_modifyitems(config, items):
    from tests.known_failures import KNOWN

    for item in items:
        reason = KNOWN.get(item.nodeid)
        if reason:
            item.add_marker(pytest.mark.xfail(reason=f"known failure (2026-12-02): {reason}", strict=False))
