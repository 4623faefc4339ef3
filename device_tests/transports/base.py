"""The one interface every way of reaching a device implements.

A transport owns a private working directory on the device. ``push``/``fetch`` take names
relative to it, ``run`` executes argv with it as the current directory, ``cleanup`` removes it.
``python_argv()`` says how to start Python on the device (the harness appends the runner script).
"""
from __future__ import annotations

import abc
import os
from pathlib import PurePosixPath
from typing import NamedTuple, Sequence

from slmpack.errors import BadInputError, ToolchainError

DEFAULT_TIMEOUT = 1800.0


class RunResult(NamedTuple):
    rc: int
    stdout: str
    stderr: str


class Transport(abc.ABC):
    name: str = "?"

    @abc.abstractmethod
    def push(self, local_path: str | os.PathLike, remote_name: str) -> str:
        """Copy a file or directory to ``remote_name`` in the working dir; returns the device path."""

    @abc.abstractmethod
    def run(self, argv: Sequence[str], timeout: float = DEFAULT_TIMEOUT) -> RunResult:
        """Run ``argv`` on the device in the working dir; raises E_DEVICE_TIMEOUT on timeout."""

    @abc.abstractmethod
    def fetch(self, remote_name: str, local_path: str | os.PathLike) -> str:
        """Copy ``remote_name`` from the working dir to ``local_path``; returns ``local_path``."""

    @abc.abstractmethod
    def cleanup(self) -> None:
        """Remove the working dir from the device. Safe to call twice."""

    @abc.abstractmethod
    def python_argv(self) -> list[str]:
        """The argv prefix that starts Python on the device."""

    def describe(self) -> dict:
        """What the report says about this transport (no secrets: no key material)."""
        return {"transport": self.name}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cleanup()


def check_remote_name(name: str) -> str:
    """A relative, normalized name inside the working dir (no absolute paths, no ``..``)."""
    p = PurePosixPath(name)
    if not name or p.is_absolute() or ".." in p.parts or "\\" in name:
        raise BadInputError(f"remote name {name!r} must be a relative path inside the working dir",
                            code="E_BAD_INPUT")
    return str(p)


def timeout_error(what: str, timeout: float) -> ToolchainError:
    return ToolchainError(f"{what} did not finish within {timeout:g} s", code="E_DEVICE_TIMEOUT")


def tail(text: str, lines: int = 5) -> str:
    return " | ".join(text.strip().splitlines()[-lines:])
