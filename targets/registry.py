"""Explicit target registry keyed by TargetName. No discovery: the list below is the registry.
Duplicates are refused."""
from __future__ import annotations

import importlib

from slmpack.errors import BadInputError, UnsupportedError
from slmpack.targets.base import TargetName

_REGISTRY: dict[TargetName, object] = {}

# (module, class) per target, in display order. Each module is imported explicitly by name.
BUILTIN = (
    ("slmpack.targets.onnx.target", "OnnxTarget"),
    ("slmpack.targets.executorch.target", "ExecuTorchTarget"),
    ("slmpack.targets.tflite.target", "TFLiteTarget"),
    ("slmpack.targets.coreml.target", "CoreMLTarget"),
)


def register(target) -> None:
    if target.name in _REGISTRY:
        raise ValueError(f"target {target.name.value} is already registered")
    _REGISTRY[target.name] = target


def _load_builtin() -> None:
    if _REGISTRY:
        return
    for module, cls in BUILTIN:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name and module.startswith(e.name):  # target not built yet in this checkout
                continue
            raise
        register(getattr(mod, cls)())


def get(name: TargetName | str):
    _load_builtin()
    try:
        key = TargetName(name)
    except ValueError:
        raise BadInputError(f"unknown target {name!r}; choose from: {', '.join(t.value for t in TargetName)}",
                            "E_TARGET_UNKNOWN") from None
    if key not in _REGISTRY:
        raise UnsupportedError(f"target {key.value} is not available in this build "
                               f"(available: {', '.join(available())})", "E_TARGET_UNAVAILABLE")
    return _REGISTRY[key]


def available() -> list[str]:
    _load_builtin()
    return [t.value for t in TargetName if t in _REGISTRY]
