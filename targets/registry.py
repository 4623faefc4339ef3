"""Explicit target registry keyed by TargetName. No discovery; duplicates are refused."""
from __future__ import annotations

from slmpack.errors import BadInputError, UnsupportedError
from slmpack.targets.base import TargetName

_REGISTRY: dict[TargetName, object] = {}


def register(target) -> None:
    if target.name in _REGISTRY:
        raise ValueError(f"target {target.name.value} is already registered")
    _REGISTRY[target.name] = target


def _load_builtin() -> None:
    if _REGISTRY:
        return
    from slmpack.targets.onnx.target import OnnxTarget

    register(OnnxTarget())


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
