"""ctypes binding of ``libslm_et.so``, the torch-free C ABI over ExecuTorch's ``Module``
(``native/et_shim.cpp``; ``device_tests/et_runtime.py`` builds it with the wheel's runtime libraries).

ExecuTorch's Python bindings import torch, and PyPI's aarch64 torch is a CUDA build, so a board has
no ``executorch.runtime`` to import; this binding calls the C++ runtime the executorch wheel ships
torch-free instead. ``SLMPACK_ET_LIB`` (or the device runner's ``--et-lib``) names the library.
Programs exported with ``--et-sdpa decomposed`` run here; a ``custom`` program calls the llama
custom ops, whose kernels PyPI ships only linked to libtorch, and is refused at load with a
typed error that says so.
"""
from __future__ import annotations

import ctypes
import functools
import os
from pathlib import Path

import numpy as np

from .errors import BadInputError, ErrorCode, ToolchainError

ENV = "SLMPACK_ET_LIB"
_DTYPES = (np.float32, np.float16)  # the shim's output dtype codes 0, 1 (2, bfloat16, is refused)
_ERR = 512
_MISSING_OP = (" (a program exported with --et-sdpa custom calls the llama custom ops, whose kernels this "
               "torch-free runtime does not have: export with --et-sdpa decomposed)")


def selected() -> str | None:
    """The library ``SLMPACK_ET_LIB`` names, if any."""
    return os.environ.get(ENV) or None


@functools.lru_cache(maxsize=None)   # one binding per library: reset() reloads programs, not the library
def _bind(path: str) -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL(path)
    except OSError as exc:
        raise BadInputError(f"{ENV}={path}: cannot load the ExecuTorch shim: {exc}",
                            ErrorCode.E_RUNTIME_MISSING) from None
    vp, cp, sz, ci = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int
    lib.slm_et_version.restype = cp
    lib.slm_et_load.restype, lib.slm_et_load.argtypes = vp, [cp, cp, sz]
    lib.slm_et_free.restype, lib.slm_et_free.argtypes = None, [vp]
    lib.slm_et_load_method.restype, lib.slm_et_load_method.argtypes = ci, [vp, cp, cp, sz]
    lib.slm_et_run.restype = ci
    lib.slm_et_run.argtypes = [vp, cp, ci, ctypes.POINTER(vp), ctypes.POINTER(ctypes.c_int64),
                               ctypes.POINTER(ci), cp, sz]
    lib.slm_et_out_shape.restype = ci
    lib.slm_et_out_shape.argtypes = [vp, vp, ci, ctypes.POINTER(ci)]
    lib.slm_et_out_copy.restype, lib.slm_et_out_copy.argtypes = ctypes.c_int64, [vp, vp, ctypes.c_int64]
    return lib


class NativeProgram:
    """One loaded model.pte. ``run(method, arrays)`` takes int64 arrays and returns output 0 as float32."""

    def __init__(self, path: Path, lib: str | None = None):
        self._handle = None
        self.path = Path(path)
        if not self.path.is_file():
            raise BadInputError(f"{self.path}: no such file", ErrorCode.E_ARTIFACT_MISSING)
        lib = lib or selected()
        if not lib:
            raise BadInputError(f"{ENV} is not set", ErrorCode.E_RUNTIME_MISSING)
        self._lib = _bind(lib)
        self.version = self._lib.slm_et_version().decode()
        err = ctypes.create_string_buffer(_ERR)
        self._handle = self._lib.slm_et_load(str(self.path).encode(), err, _ERR)
        if not self._handle:
            raise BadInputError(f"executorch cannot load {self.path.name}: {err.value.decode()}",
                                ErrorCode.E_ARTIFACT_INVALID)
        self._loaded: set[str] = set()

    def load_method(self, method: str) -> None:
        if method in self._loaded:
            return
        err = ctypes.create_string_buffer(_ERR)
        if self._lib.slm_et_load_method(self._handle, method.encode(), err, _ERR):
            msg = err.value.decode()
            raise BadInputError(f"executorch cannot load {self.path.name}: {msg}"
                                + (_MISSING_OP if "OperatorMissing" in msg else ""), ErrorCode.E_ARTIFACT_INVALID)
        self._loaded.add(method)

    def run(self, method: str, arrays) -> np.ndarray:
        self.load_method(method)
        arrays = [np.ascontiguousarray(a, dtype=np.int64) for a in arrays]
        if any(not 1 <= a.ndim <= 4 for a in arrays):
            raise BadInputError("executorch inputs must have rank 1..4", ErrorCode.E_BAD_INPUT)
        data = (ctypes.c_void_p * len(arrays))(*(a.ctypes.data for a in arrays))
        shapes = (ctypes.c_int64 * (4 * len(arrays)))()
        for i, a in enumerate(arrays):
            shapes[4 * i:4 * i + a.ndim] = list(a.shape)
        ranks = (ctypes.c_int * len(arrays))(*(a.ndim for a in arrays))
        err = ctypes.create_string_buffer(_ERR)
        if self._lib.slm_et_run(self._handle, method.encode(), len(arrays), data, shapes, ranks, err, _ERR):
            raise ToolchainError(f"executorch {err.value.decode()}", ErrorCode.E_EXECUTORCH_RUN)
        shape, code = (ctypes.c_int64 * 4)(), ctypes.c_int()
        rank = self._lib.slm_et_out_shape(self._handle, shape, 4, ctypes.byref(code))
        if not 0 <= code.value < len(_DTYPES) or rank > 4:
            raise ToolchainError(f"executorch {method} returned an unsupported output (dtype code {code.value}, "
                                 f"rank {rank})", ErrorCode.E_EXECUTORCH_RUN)
        out = np.empty(tuple(shape[:rank]), dtype=_DTYPES[code.value])
        self._lib.slm_et_out_copy(self._handle, out.ctypes.data, out.nbytes)
        return out.astype(np.float32, copy=False)

    def close(self) -> None:
        if getattr(self, "_handle", None):
            self._lib.slm_et_free(self._handle)
            self._handle = None

    def __del__(self):
        self.close()
