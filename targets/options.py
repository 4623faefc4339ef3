"""Per-target CLI options. Each target owns ``targets/<name>/cli_options.py`` with
``add_arguments(group)`` and ``from_args(args) -> <Target>Options``; the CLI gives each target
only its own options object."""
from __future__ import annotations

import importlib

TARGETS = ("onnx", "executorch", "tflite", "coreml")


def _module(target: str):
    name = f"slmpack.targets.{target}.cli_options"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name and name.startswith(e.name):  # the target (or its folder) is not in this build
            return None
        raise


def add_target_arguments(parser) -> None:
    for t in TARGETS:
        mod = _module(t)
        if mod is not None:
            mod.add_arguments(parser.add_argument_group(f"{t} options"))


def options_for(target: str, args):
    mod = _module(target)
    return mod.from_args(args) if mod is not None else None
