"""Shared fixtures: tiny checkpoints and one ONNX export of the demo model per session."""
from __future__ import annotations

import os
from pathlib import Path

# Under pytest-xdist each worker gets its share of the cores for torch / OpenMP, so two workers on
# two cores do not oversubscribe them (set before anything imports torch).
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _share = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ.setdefault("OMP_NUM_THREADS", str(_share))

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
