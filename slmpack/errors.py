"""Typed errors with stable codes (re-exported from the torch-free runtime kit, ``slmpack.runtime.errors``).

Exit codes: 0 ok, 1 validation failed, 2 bad input or usage, 3 toolchain failure.
"""
from slmpack.runtime.errors import (BadInputError, ErrorCode, PackageIntegrityError, SlmpackError, ToolchainError,
                                    UnsupportedError, ValidationFailed)

__all__ = ["ErrorCode", "SlmpackError", "BadInputError", "UnsupportedError", "ValidationFailed",
           "ToolchainError", "PackageIntegrityError"]


class TargetNotInstalled(BadInputError):
    """The requested target's toolchain (its pip extra) is not installed. Exit code 2."""

    default_code = ErrorCode.E_TARGET_NOT_INSTALLED


class BuildStale(SlmpackError):
    """``slmpack build --check``: some package is missing or out of date. Exit code 1."""

    exit_code = 1
    default_code = ErrorCode.E_BUILD_STALE


class BuildFailed(SlmpackError):
    """``slmpack build``: some packages failed; exits with the worst of their exit codes."""

    default_code = ErrorCode.E_BUILD_FAILED

    def __init__(self, message: str, exit_code: int, *, details: dict | None = None):
        super().__init__(message, details=details)
        self.exit_code = exit_code


__all__ += ["TargetNotInstalled", "BuildStale", "BuildFailed"]
