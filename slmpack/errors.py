"""Typed errors with stable codes (re-exported from the torch-free runtime kit, ``slmpack.runtime.errors``).

Exit codes: 0 ok, 1 validation failed, 2 bad input or usage, 3 toolchain failure.
"""
from slmpack.runtime.errors import (BadInputError, BuildFailed, BuildStale, ErrorCode, PackageIntegrityError,
                                    SlmpackError, TargetNotInstalled, ToolchainError, UnsupportedError,
                                    ValidationFailed)

__all__ = ["ErrorCode", "SlmpackError", "BadInputError", "UnsupportedError", "ValidationFailed",
           "ToolchainError", "PackageIntegrityError", "TargetNotInstalled", "BuildStale", "BuildFailed"]
