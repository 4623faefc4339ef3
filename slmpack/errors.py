"""Typed errors with stable codes and documented exit codes.

Every failure a user can cause or meet is one of these. The CLI prints ``error[CODE]: message``
on one line and exits with the class's exit code:

    0  ok
    1  validation failed (the artifact does not behave like the source model)
    2  bad input or usage (missing/corrupt checkpoint, bad options, existing output, ...)
    3  toolchain failure (a converter or runtime failed on input we accepted)
"""
from __future__ import annotations


class SlmpackError(Exception):
    """Base class. ``code`` is stable and documented; ``message`` is one line for humans."""

    exit_code = 2
    default_code = "E_SLMPACK"

    def __init__(self, message: str, code: str | None = None, *, details: dict | None = None):
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.details = details or {}

    def to_json(self) -> dict:
        return {"error": self.code, "message": self.message, "exit_code": self.exit_code,
                "details": self.details}

    def __str__(self) -> str:  # one line, always
        return f"{self.message}".replace("\n", " ")


class BadInputError(SlmpackError):
    """The user's input (model directory, options, package) is unusable. Exit code 2."""

    exit_code = 2
    default_code = "E_BAD_INPUT"


class UnsupportedError(BadInputError):
    """The input is valid but this combination is not supported (architecture, op, quant mode)."""

    default_code = "E_UNSUPPORTED"


class TargetNotInstalled(BadInputError):
    """The requested target's toolchain (its pip extra) is not installed. Exit code 2."""

    default_code = "E_TARGET_NOT_INSTALLED"


class ValidationFailed(SlmpackError):
    """The exported artifact does not match the source model within the declared tolerance."""

    exit_code = 1
    default_code = "E_VALIDATION"


class BuildStale(SlmpackError):
    """``slmpack build --check``: some package is missing or out of date. Exit code 1."""

    exit_code = 1
    default_code = "E_BUILD_STALE"


class BuildFailed(SlmpackError):
    """``slmpack build``: some packages failed; exits with the worst of their exit codes."""

    default_code = "E_BUILD_FAILED"

    def __init__(self, message: str, exit_code: int, *, details: dict | None = None):
        super().__init__(message, details=details)
        self.exit_code = exit_code


class ToolchainError(SlmpackError):
    """A converter or runtime failed on input we accepted. Exit code 3."""

    exit_code = 3
    default_code = "E_TOOLCHAIN"


class PackageIntegrityError(SlmpackError):
    """A package's files do not match its manifest (changed, missing or extra). Exit code 1."""

    exit_code = 1
    default_code = "E_PACKAGE_INTEGRITY"
