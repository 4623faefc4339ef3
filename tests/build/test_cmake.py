"""A real CMake project using cmake/SlmpackConfig.cmake: builds, `make` again does not re-export,
a recipe change re-exports that package only."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.build.helpers import project

REPO = Path(__file__).resolve().parents[2]
RECIPE = """
[defaults]
targets = ["onnx"]
model = "model-a"
heldout_tokens = 32
greedy_tokens = 4
[[package]]
name = "small"
context = 32
[[package]]
name = "large"
context = 48
"""
CMAKELISTS = """
cmake_minimum_required(VERSION 3.19)
project(slmpack_app NONE)
find_package(Slmpack CONFIG REQUIRED)
slmpack_add_package(NAME models RECIPE ${CMAKE_SOURCE_DIR}/slmpack.toml
                    OUTPUT_DIR ${CMAKE_BINARY_DIR}/assets CACHE_DIR ${CMAKE_BINARY_DIR}/slmpack-cache)
"""


def _make(build: Path) -> str:
    p = subprocess.run(["make"], cwd=build, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("cmake") is None or shutil.which("make") is None, reason="needs cmake + make")
def test_cmake_project_rebuilds_only_on_input_change(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    project(src, RECIPE)
    (src / "CMakeLists.txt").write_text(CMAKELISTS)
    build = tmp_path / "build"
    slmpack = Path(sys.executable).parent / "slmpack"
    cfg = subprocess.run(["cmake", "-S", str(src), "-B", str(build), f"-DSlmpack_DIR={REPO / 'cmake'}",
                          f"-DSLMPACK_COMMAND={slmpack}"], capture_output=True, text=True, timeout=300)
    assert cfg.returncode == 0, cfg.stdout + cfg.stderr

    out = _make(build)
    assert out.count("slmpack: ") == 2, out
    manifests = {n: build / "assets" / n / "onnx" / "manifest.json" for n in ("small", "large")}
    assert all(m.is_file() for m in manifests.values())
    mtimes = {n: m.stat().st_mtime_ns for n, m in manifests.items()}

    out = _make(build)  # nothing changed: make runs no slmpack command
    assert "slmpack: " not in out, out
    assert {n: m.stat().st_mtime_ns for n, m in manifests.items()} == mtimes

    (src / "slmpack.toml").write_text(RECIPE.replace("context = 48", "context = 40"))
    out = _make(build)  # recipe changed: re-configured, both steps re-run, only `large` re-exported
    assert manifests["small"].stat().st_mtime_ns == mtimes["small"]
    assert manifests["large"].stat().st_mtime_ns != mtimes["large"]
    assert '"max_context": 40' in manifests["large"].read_text()
