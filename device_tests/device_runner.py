#!/usr/bin/env python3
"""On-device runner: validate and time one slmpack package on the machine it runs on.

A thin CLI over the runtime kit (``slmpack/runtime/``: standard library + numpy + the format's
runtime), which the harness ships beside this script as the package directory
``slmpack_runtime/``. In a source checkout the kit is found at ``../slmpack/runtime``. It never
imports slmpack, torch or safetensors (ExecuTorch's own pybindings import torch).

    python3 device_runner.py PKG_DIR [--threads N] [--max-new-tokens 32] [--out result.json]
                             [--et-lib et-runtime/libslm_et.so]
                             [--require-signature --public-key KEY.pub [--signature PKG.sig]]

``--require-signature`` refuses (exit 1, ``E_SIGNATURE_INVALID``) a package whose ``slmpack sign``
signature is missing or does not verify, before anything of it is loaded; it needs the
``cryptography`` package on the device (``E_RUNTIME_MISSING``, exit 2, names it otherwise).

Exactly one JSON document is printed to stdout; exit codes 0 ok, 1 validation failed, 2 bad
input, 3 runtime failure. See ``slmpack/runtime/device.py`` for the steps.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

KIT = "slmpack_runtime"


def kit_dir() -> Path:
    here = Path(__file__).resolve().parent
    for cand in (here / KIT, here.parent / "slmpack" / "runtime"):
        if (cand / "__init__.py").is_file():
            return cand
    raise SystemExit(f"device_runner: the runtime kit ({KIT}/) is not beside {Path(__file__).name}")


def stage_kit(dst: Path) -> Path:
    """A clean copy of the kit's sources (``*.py`` only, no caches) at ``dst/slmpack_runtime``,
    to ship beside this script."""
    src, out = kit_dir(), dst / KIT
    for f in sorted(src.rglob("*.py")):
        target = out / f.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(f.read_bytes())
    return out


def load_kit():
    """Import the kit as the top-level package ``slmpack_runtime`` (its imports are relative)."""
    if KIT not in sys.modules:
        d = kit_dir()
        spec = importlib.util.spec_from_file_location(KIT, d / "__init__.py", submodule_search_locations=[str(d)])
        mod = importlib.util.module_from_spec(spec)
        sys.modules[KIT] = mod
        spec.loader.exec_module(mod)
    return importlib.import_module(f"{KIT}.device")


if __name__ == "__main__":
    sys.exit(load_kit().main())
