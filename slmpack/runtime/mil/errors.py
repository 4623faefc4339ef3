"""Typed errors of the MIL interpreter (all slmpack errors, with stable codes)."""
from __future__ import annotations

from ..errors import BadInputError, ToolchainError, UnsupportedError


class UnsupportedOpError(UnsupportedError):
    """The program uses an op (or an op variant) the interpreter does not implement."""

    default_code = "E_COREML_OP_UNSUPPORTED"

    def __init__(self, op_type: str, why: str = "", *, op_name: str | None = None):
        where = f" (op {op_name!r})" if op_name else ""
        super().__init__(f"MIL interpreter: op type {op_type!r}{where} is not implemented"
                         + (f": {why}" if why else ""), details={"op": op_type, "name": op_name})
        self.op_type = op_type


class MILFormatError(BadInputError):
    """The .mlpackage / Model.proto / weight blob file is malformed or not what we emit."""

    default_code = "E_COREML_PACKAGE"


class MILRuntimeError(ToolchainError):
    """Executing an op failed or produced something other than its declared type."""

    default_code = "E_COREML_INTERPRETER"
