"""slmpack: export trained small language models to validated on-device packages.

Python API (mirrors the CLI)::

    import slmpack
    pkg = slmpack.export("path/to/hf-model", target="onnx", out="pkg")   # -> Package
    slmpack.validate("pkg"); slmpack.verify("pkg"); slmpack.inspect("path/to/hf-model")
    slmpack.load("pkg").generate("Once upon", max_new_tokens=16)       # -> Generation(ids, text)
"""
from __future__ import annotations

__version__ = "0.1.0"


def __getattr__(name):  # lazy: `import slmpack` stays cheap (no torch import)
    if name in ("export", "validate", "verify", "inspect"):
        from slmpack import api

        return getattr(api, name)
    if name == "load":  # torch-free: the runtime kit only
        from slmpack.runtime.loaded import load

        return load
    if name in ("ExportConfig", "TraceConfig", "ValidationConfig", "Precision"):
        from slmpack import config

        return getattr(config, name)
    raise AttributeError(name)
