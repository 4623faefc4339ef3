"""Shared helpers for the build tests: tiny checkpoints, recipes, running `slmpack build`."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.tiny_models import write_tiny_model

# 4 packages over 2 tiny checkpoints: a changed checkpoint B rebuilds exactly b1 and b2
RECIPE = """
out = "out"
cache = "cache"
[defaults]
targets = ["onnx"]
heldout_tokens = 32
greedy_tokens = 4
[[package]]
name = "a1"
model = "model-a"
context = 32
[[package]]
name = "a2"
model = "model-a"
context = 48
[[package]]
name = "b1"
model = "model-b"
context = 32
[[package]]
name = "b2"
model = "model-b"
context = 40
"""


def project(root: Path, recipe: str = RECIPE) -> Path:
    write_tiny_model(root / "model-a", "llama", seed=1, hidden=16, heads=2, vocab=64, max_pos=64)
    write_tiny_model(root / "model-b", "llama", seed=2, hidden=16, heads=2, vocab=64, max_pos=64)
    (root / "slmpack.toml").write_text(recipe)
    return root / "slmpack.toml"


def slmpack(*args: str, cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slmpack.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def build_json(recipe: Path, *extra: str) -> tuple[int, dict]:
    p = slmpack("build", str(recipe), "--json", *extra)
    assert p.stdout.strip(), p.stderr
    doc = json.loads(p.stdout)  # one document; on failure the error's details hold the summary
    return p.returncode, doc["details"] if p.returncode else doc


def statuses(report: dict) -> dict[str, str]:
    return {r["package"]: r["status"] for r in report["packages"]}
