"""Every error code is registered once in ``ErrorCode`` and the README's table lists exactly them."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from slmpack.errors import BadInputError, ErrorCode, SlmpackError, ToolchainError

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("slmpack", "exporter", "calibration", "targets", "device_tests", "bench", "scripts")
CODE = re.compile(r"""["'`](E_[A-Z0-9_]+)["'`:]""")


def _readme_table() -> dict[str, str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("### Error codes", 1)[1]
    return dict(re.findall(r"^\| `(E_[A-Z0-9_]+)` \| (.+?) \|$", section, flags=re.M))


def test_readme_error_table_is_the_enum():
    table = _readme_table()
    assert list(table) == [c.value for c in ErrorCode]
    assert all(table[c.value] == c.meaning for c in ErrorCode)


def test_every_code_in_the_source_is_registered():
    used = set()
    for folder in SOURCES:
        for path in (ROOT / folder).rglob("*.py"):
            used |= set(CODE.findall(path.read_text(encoding="utf-8")))
    assert used, "the scan found no codes"
    unregistered = sorted(c for c in used if c not in ErrorCode.__members__)
    assert not unregistered, unregistered


def test_no_code_is_built_by_concatenation():
    offenders = []
    for folder in SOURCES:
        for path in (ROOT / folder).rglob("*.py"):
            for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if re.search(r"""["']E_[A-Z0-9_]*_["']\s*\+|f["']E_\{""", line):
                    offenders.append(f"{path.relative_to(ROOT)}:{i}")
    assert not offenders, offenders


def test_unregistered_code_fails_at_construction():
    with pytest.raises(ValueError):
        BadInputError("typo", "E_NOT_A_CODE")
    e = ToolchainError("x", "E_ONNX_CHECK")
    assert e.code is ErrorCode.E_ONNX_CHECK and e.exit_code == 3
    assert f"{e.code}" == "E_ONNX_CHECK" and e.to_json()["error"] == "E_ONNX_CHECK"
    assert SlmpackError("x").code is ErrorCode.E_SLMPACK
