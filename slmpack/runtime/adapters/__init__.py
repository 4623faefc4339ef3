"""Per-format adapters: load a package's artifact with the format's own runtime, behind the
Runner protocol. ``open_runner(pkg, manifest)`` picks the adapter by the manifest's target.

Each adapter imports only the standard library, numpy and its format's runtime (onnxruntime;
ai_edge_litert or tflite_runtime; executorch.runtime, whose pybindings need torch, or the
torch-free ``libslm_et.so`` when ``SLMPACK_ET_LIB`` names it (``executorch_native.py``); Core ML's
MLModel on macOS or the kit's numpy MIL interpreter elsewhere), and only when it is opened.
"""
from __future__ import annotations

from pathlib import Path

from .. import native_et
from ..manifest import Manifest
from ..records import TargetName


def open_runner(pkg: Path, manifest: Manifest, threads: int = 0, *, coreml: str = "auto"):
    """The Runner for ``pkg``'s artifact. ``coreml``: ``auto`` | ``interpreter`` | ``coreml``."""
    pkg = Path(pkg)
    if manifest.target is TargetName.ONNX:
        from .onnx import OnnxAdapter
        return OnnxAdapter(pkg, manifest, threads)
    if manifest.target is TargetName.TFLITE:
        from .tflite import TFLiteAdapter
        return TFLiteAdapter(pkg, manifest, threads)
    if manifest.target is TargetName.EXECUTORCH:
        if native_et.selected():
            from .executorch_native import NativeExecuTorchAdapter
            return NativeExecuTorchAdapter(pkg / manifest.artifact, manifest.model.max_prompt,
                                           manifest.model.max_context)
        from .executorch import ExecuTorchAdapter
        return ExecuTorchAdapter(pkg / manifest.artifact, manifest.model.max_prompt, manifest.model.max_context)
    from .coreml import open_coreml
    return open_coreml(pkg, manifest, coreml)


__all__ = ["open_runner"]
