"""The malicious corpus (tests/hardening/corpus.py), each case through the CLI's main() in-process.

Each case asserts: exit code and error code; nothing at --out; no file outside the model directory
(or the output's folder) opened, per an audit hook on ``open``; and no other side effect (the whole
case folder is byte-for-byte as before, no staging, lock or probe left).
"""
from __future__ import annotations

import json
import os
import shutil

import pytest

from slmpack.cli import main
from tests.hardening.audit import record_opens, snapshot
from tests.hardening.corpus import SECRET, cases

CASES = cases()
FORBIDDEN = (SECRET, "/dev/zero", "/dev/null")


def test_corpus_is_large_enough():
    assert len(CASES) >= 60
    assert len({c.name for c in CASES}) == len(CASES)


def run_case(case, base, tiny_llama, capsys):
    shutil.copytree(tiny_llama, base / "model", symlinks=True)
    (base / "outside").mkdir()
    (base / "work").mkdir()
    out = base / "work" / "out"
    extra = case.mutate(base) or []
    before = snapshot(base)
    capsys.readouterr()
    with record_opens() as opened:
        rc = main(["export", str(base / "model"), "--target", "onnx", "--out", str(out), "--no-validate", "--json",
                   *extra])
    captured = capsys.readouterr()
    return rc, json.loads(captured.out), captured.err, opened, before, out, extra


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_corpus_case(case, tmp_path, tiny_llama, capsys):
    base = tmp_path / "case"
    base.mkdir()
    rc, doc, err, opened, before, out, extra = run_case(case, base, tiny_llama, capsys)
    assert (rc, doc.get("error")) == (case.exit_code, case.code), err
    assert err.count("\n") == 1 and err.startswith(f"error[{case.code}]")  # one line, no traceback
    if "--out" in extra:
        out = extra[extra.index("--out") + 1]
    assert not os.path.lexists(out) or str(out) in {str(base / "model"), str(base)} or \
        os.path.relpath(out, base) in before, "something appeared at --out"
    allowed = (str(base / "model") + os.sep, str(base / "work") + os.sep)
    for path in opened:
        assert path not in FORBIDDEN, f"opened {path}"
        if path.startswith(str(base) + os.sep):
            assert path.startswith(allowed), f"opened {path}, outside the model directory"
    after = snapshot(base)
    after.pop(os.path.join("work", "build.log"), None)  # the run's own log beside --out (README: quiet output)
    assert after == before  # no other side effect: no staging, lock, probe, payload marker or deletion
