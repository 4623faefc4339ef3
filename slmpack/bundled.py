"""Where the bundled demo model and demo data live inside the installed package."""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def demo_data_dir() -> Path:
    return Path(str(files("slmpack") / "demo_data"))


def demo_model_dir() -> Path:
    return Path(str(files("slmpack") / "demo_model"))
