"""Explicit target registry keyed by TargetName. No discovery: the list below is the registry.
Duplicates are refused. A target whose toolchain (its pip extra) is not installed is not
registered; asking for it raises E_TARGET_NOT_INSTALLED with the command that installs it."""
from __future__ import annotations

import importlib
import importlib.util

from slmpack.errors import BadInputError, TargetNotInstalled, UnsupportedError
from slmpack.targets.base import TargetName

_REGISTRY: dict[TargetName, object] = {}
_NOT_INSTALLED: dict[TargetName, str] = {}  # target -> its pip extra

# The import names each target's extra provides (pyproject.toml [project.optional-dependencies]);
# checked with find_spec, so nothing heavy is imported to decide.
EXTRAS: dict[TargetName, tuple[str, tuple[str, ...]]] = {
    TargetName.ONNX: ("onnx", ("onnx", "onnxruntime", "onnxscript")),
    TargetName.EXECUTORCH: ("executorch", ("executorch", "torchao")),
    TargetName.TFLITE: ("tflite", ("litert_torch", "ai_edge_litert")),
    TargetName.COREML: ("coreml", ("coremltools",)),
}

# (name, module, class) per target, in display order. Each module is imported explicitly by name.
BUILTIN = (
    (TargetName.ONNX, "slmpack.targets.onnx.target", "OnnxTarget"),
    (TargetName.EXECUTORCH, "slmpack.targets.executorch.target", "ExecuTorchTarget"),
    (TargetName.TFLITE, "slmpack.targets.tflite.target", "TFLiteTarget"),
    (TargetName.COREML, "slmpack.targets.coreml.target", "CoreMLTarget"),
)


def register(target) -> None:
    if target.name in _REGISTRY:
        raise ValueError(f"target {target.name.value} is already registered")
    _REGISTRY[target.name] = target


def _load_builtin() -> None:
    if _REGISTRY or _NOT_INSTALLED:
        return
    for name, module, cls in BUILTIN:
        extra, imports = EXTRAS[name]
        if any(importlib.util.find_spec(m) is None for m in imports):
            _NOT_INSTALLED[name] = extra
            continue
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
    if key in _NOT_INSTALLED:
        raise TargetNotInstalled(f"pip install 'slmpack[{_NOT_INSTALLED[key]}]' (the {key.value} toolchain is "
                                 f"not installed)", "E_TARGET_NOT_INSTALLED", details={"extra": _NOT_INSTALLED[key]})
    if key not in _REGISTRY:
        raise UnsupportedError(f"target {key.value} is not available in this build "
                               f"(available: {', '.join(available())})", "E_TARGET_UNAVAILABLE")
    return _REGISTRY[key]


def available() -> list[str]:
    _load_builtin()
    return [t.value for t in TargetName if t in _REGISTRY]


def not_installed() -> dict[str, str]:
    """Targets whose toolchain is missing -> the pip extra that installs it."""
    _load_builtin()
    return {t.value: extra for t, extra in _NOT_INSTALLED.items()}
