"""Defects 6 and 9: --force replaces only packages; staging is owner-stamped, locked, cleaned up
after dead processes and on SIGTERM/SIGINT; kill -9 never leaves a partial package or leftovers,
neither in the 200 trials on a forked writer of the export's staging code (kill_trials.py) nor
when a real `slmpack export` of the bundled demo model is killed."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slmpack.errors import BadInputError
from slmpack.package import MANIFEST, hash_tree, staged_directory, verify, write_json
from slmpack.staging import process_start
from tests.hardening.kill_trials import valid_manifest, write_package

ROOT = Path(__file__).resolve().parents[2]


def _beside(d: Path) -> list[str]:
    return sorted(n for n in os.listdir(d) if n != "pkg")


def test_stale_staging_of_dead_processes_is_removed(tmp_path):
    out = tmp_path / "pkg"
    dead = tmp_path / ".pkg.staging-4194999-12345-deadbeef"      # pid above any pid_max: dead
    legacy = tmp_path / ".pkg.staging-x1y2z3w4"                    # old unstamped mkdtemp name
    old = tmp_path / ".pkg.old-4194999-1-00ff"
    parent = os.getppid()
    alive = tmp_path / f".pkg.staging-{parent}-{process_start(parent)}-0a0b"   # a live owner: kept
    for d in (dead, legacy, old, alive):
        d.mkdir()
        (d / "junk").write_text("x")
    write_package(out, False, 0)
    verify(out)
    assert _beside(tmp_path) == [alive.name]


def test_recycled_pid_is_not_an_owner(tmp_path):
    parent = os.getppid()
    wrong_start = tmp_path / f".pkg.staging-{parent}-{process_start(parent) + 1}-0a0b"
    wrong_start.mkdir()
    write_package(tmp_path / "pkg", False, 0)
    assert _beside(tmp_path) == []


def test_out_dot_force_leaves_nothing_behind(tmp_path, monkeypatch):
    pkg = tmp_path / "pkg"
    write_package(pkg, False, 0)
    first = json.loads((pkg / MANIFEST).read_text())["files"]
    monkeypatch.chdir(pkg)
    write_package(Path("."), True, 1)
    monkeypatch.chdir(tmp_path)
    verify(pkg)
    assert json.loads((pkg / MANIFEST).read_text())["files"] != first
    assert _beside(tmp_path) == []  # no "..old-*", no staging, no lock


def test_force_replaces_a_package_but_not_the_model_dir_or_its_parts(tmp_path):
    model = tmp_path / "model"
    inner = model / "pkg"
    model.mkdir()
    write_package(inner, False, 0)          # a valid package, but inside the model dir
    with pytest.raises(BadInputError) as e:
        with staged_directory(inner, True, model):
            pass
    assert e.value.code == "E_OUTPUT_EXISTS" and verify(inner)["ok"]
    with pytest.raises(BadInputError) as e:
        with staged_directory(tmp_path, True, model):
            pass
    assert e.value.code == "E_OUTPUT_EXISTS" and model.is_dir()
    user = tmp_path / "user"
    user.mkdir()
    (user / "thesis.tex").write_text("years of work")
    with pytest.raises(BadInputError) as e:
        with staged_directory(user, True, model):
            pass
    assert e.value.code == "E_OUTPUT_EXISTS" and (user / "thesis.tex").read_text() == "years of work"
    tampered = tmp_path / "tampered"
    write_package(tampered, False, 0)
    (tampered / "part00.bin").write_bytes(b"changed")
    with pytest.raises(BadInputError):
        with staged_directory(tampered, True, model):
            pass
    out = tmp_path / "ok"
    write_package(out, False, 0)
    write_package(out, True, 3)  # a package that verifies is replaced
    assert verify(out)["ok"] and sorted(os.listdir(tmp_path)) == ["model", "ok", "tampered", "user"]


def test_exception_inside_staging_removes_it_and_the_lock(tmp_path):
    with pytest.raises(RuntimeError):
        with staged_directory(tmp_path / "pkg", False) as stage:
            (stage / "a").write_text("x")
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


def test_second_writer_of_the_same_output_is_refused(tmp_path):
    out = tmp_path / "pkg"
    with staged_directory(out, False) as stage:
        with pytest.raises(BadInputError) as e:
            with staged_directory(out, False):
                pass
        assert e.value.code == "E_OUTPUT_BUSY"
        m = valid_manifest()
        for name in m["files"]:
            (stage / name).write_bytes(b"x")
        write_json(stage / MANIFEST, {**m, "files": hash_tree(stage)})
    assert verify(out)["ok"]


@pytest.mark.slow
def test_200_kill9_trials_leave_no_partial_package_and_no_leftovers(tmp_path):
    res = subprocess.run([sys.executable, "-m", "tests.hardening.kill_trials", "200", str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    r = json.loads(res.stdout)
    assert "error" not in r, r
    assert r["trials"] == 200 and r["partial_packages"] == 0 and r["leftovers_after_next_run"] == 0
    assert r["killed_mid_run"] >= 100 and r["trials_with_stale_entries_before_cleanup"] >= 20, r
    # half the step-indexed kills land inside the commit (between and after its renames), at many of its steps
    assert r["step_kills"]["in_commit"] >= 40 and r["distinct_commit_steps_killed"] >= 10, r


@pytest.mark.slow
@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_during_export_cleans_up(tmp_path, tiny_llama, sig, code):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "slmpack.cli", "export", str(tiny_llama), "--target", "onnx",
                             "--out", str(out), "--no-validate"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and not any(n.startswith(".out.staging-") for n in os.listdir(tmp_path)):
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.01)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "E_INTERRUPTED" in err
    assert os.listdir(tmp_path) == []  # no package, no staging, no lock


def _export(out: Path, force: bool) -> subprocess.Popen:
    log = out.parent.parent / "logs" / f"{time.monotonic_ns()}.log"  # the run log goes elsewhere: only the
    log.parent.mkdir(exist_ok=True)                                # package may stay beside --out
    return subprocess.Popen([sys.executable, "-m", "slmpack.cli", "export", "--target", "onnx", "--out", str(out),
                             "--no-validate", "--log", str(log), *(["--force"] if force else [])], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _staging_opened(proc: subprocess.Popen, d: Path) -> float:
    """When ``proc`` creates its staging dir (one a dead run left is not it)."""
    before = set(os.listdir(d))
    while not any(n.startswith(".pkg.staging-") and n not in before for n in os.listdir(d)):
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.005)
    return time.monotonic()


@pytest.mark.slow
def test_kill9_of_a_real_export_at_random_moments(tmp_path):
    """2 trials on `slmpack export` of the demo model: SIGKILL it at a moment uniform over its
    staging window (from the staging dir's creation to the process's end, as measured on the
    previous complete run; 10 s before the first), alternately creating and replacing (--force)
    the package; after each kill `pkg` is absent or verifies; the next run must leave nothing but
    `pkg`, and every next run's package is byte-identical to the first (exports are deterministic).
    Kills at many more moments, inside the commit's steps, are the 200 in-process trials above."""
    d = tmp_path / "out"
    d.mkdir()
    out, rng = d / "pkg", random.Random(17)
    window, reference, outcomes = 10.0, None, []
    for trial in range(2):
        proc = _export(out, out.exists())
        opened = _staging_opened(proc, d)
        time.sleep(max(0.0, opened + rng.uniform(0, window) - time.monotonic()))
        proc.kill()
        _, err = proc.communicate(timeout=60)
        outcomes.append((proc.returncode, err.strip().splitlines()[-1:]))
        if out.exists():
            verify(out)  # never partial: the old package or the new one, whole
        proc = _export(out, out.exists())  # the next run
        opened = _staging_opened(proc, d)
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
        window = time.monotonic() - opened
        assert _beside(d) == [] and verify(out)["ok"]  # no staging, no lock, no old package
        files = (hash_tree(out), (out / MANIFEST).read_bytes())
        reference = reference or files
        assert files == reference
    # a kill lands inside the window unless that run was much faster than the one before
    assert sum(rc == -signal.SIGKILL for rc, _ in outcomes) >= 1, outcomes


SWALLOWED_SIGNAL = """
import os, signal, sys
from pathlib import Path
from slmpack.package import staged_directory
from slmpack.staging import Terminated, install_signal_handlers

class Finalizer:
    def __del__(self):  # the handler's exception raised here is printed as 'Exception ignored' and dropped
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):
            pass

install_signal_handlers()
out = Path(sys.argv[1]) / "pkg"
try:
    with staged_directory(out, False) as stage:
        (stage / "a").write_text("x")
        f = Finalizer()
        del f
        print("survived the finalizer", flush=True)
except Terminated:
    print("stopped before commit", flush=True)
print("exists" if out.exists() else "absent", sorted(os.listdir(sys.argv[1])))
"""


def test_a_stop_signal_whose_exception_was_swallowed_still_commits_nothing(tmp_path):
    """CI saw ``export`` exit 0 with a package after SIGTERM: the handler's exception had been
    raised inside a finalizer, which drops it. The remembered signal stops the run at the commit."""
    res = subprocess.run([sys.executable, "-c", SWALLOWED_SIGNAL, str(tmp_path)], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "Exception ignored" in res.stderr  # the first raise was indeed swallowed
    assert res.stdout.splitlines() == ["survived the finalizer", "stopped before commit", "absent []"]
