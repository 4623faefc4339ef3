"""kill -9 at random moments of staging and commit, many times; run as ``python -m tests.hardening.kill_trials N DIR``.

Each trial forks a child that writes a package through ``staged_directory`` — the staging/commit
code ``slmpack export`` runs (exporter/pipeline.py), with the model dir given as export gives it:
output checks, lock, stale cleanup, 20 files and a manifest, modes fixed, the commit renames;
half the trials create the package, half replace it (``--force``, which first verifies it) — and kills it
with SIGKILL at a random moment, chosen one of two ways (alternating):

- *in time*: after a delay uniform over the whole run, its length re-measured from every unkilled run;
- *in steps*: just before the k-th file-system operation the child makes (every ``open``, ``mkdir``,
  ``rename``, ``rmtree``, ``chmod``, ... as seen by ``sys.addaudithook``), k uniform over the
  operations of a whole run, or (every other time) over those of the commit (from its first
  rename on), which in time is too short for timed kills to land in: so the instants between the
  two commit renames and before the old package's removal are hit too.

After each kill: ``DIR/pkg`` is absent or a package that verifies (never partial). Then an unkilled
run must succeed and leave nothing beside ``pkg``. Prints one JSON line.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sys
import time
from pathlib import Path

from slmpack.package import MANIFEST, hash_tree, staged_directory, verify, write_json
from tests.test_manifest_record import _manifest as valid_manifest

FS_EVENTS = ("open", "os.mkdir", "os.rename", "os.replace", "os.remove", "os.rmdir", "os.chmod",
             "shutil.rmtree", "shutil.move", "shutil.copyfile", "os.listdir", "os.scandir")


def write_package(out: Path, force: bool, seed: int, model_dir: Path | None = None) -> None:
    with staged_directory(out, force, model_dir) as stage:
        for i in range(20):
            (stage / f"part{i:02d}.bin").write_bytes(os.urandom(4096 + seed % 97))
            time.sleep(0.0005)
        manifest = valid_manifest()  # a complete typed manifest (verify checks the schema too)
        for name in manifest["files"]:
            (stage / name).write_bytes(os.urandom(64))
        write_json(stage / MANIFEST, {**manifest, "files": hash_tree(stage)})


def child(out: Path, force: bool, seed: int, model_dir: Path, kill_at: int = 0, report_fd: int = -1) -> None:
    """Write the package; with ``kill_at`` k > 0, SIGKILL ourselves just before the k-th file-system
    operation; with ``report_fd``, write how many operations the whole run made."""
    count = 0
    commit = []  # the operation index of the first rename (the commit's start)

    def hook(event, args):
        nonlocal count
        if event in FS_EVENTS:
            count += 1
            if event == "os.rename" and not commit:
                commit.append(count)
            if count == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

    code = 1
    try:
        if kill_at or report_fd >= 0:
            sys.addaudithook(hook)
        write_package(out, force, seed, model_dir)
        if report_fd >= 0:
            os.write(report_fd, json.dumps([count, commit[0] if commit else 0]).encode())
        code = 0
    finally:
        os._exit(code)


def leftovers(d: Path) -> list[str]:
    return sorted(n for n in os.listdir(d) if n not in ("pkg", "model"))


def _fork(fn, *args) -> int:
    pid = os.fork()
    if pid == 0:
        fn(*args)
    return pid


def main(n: int, d: Path) -> dict:
    out, model = d / "pkg", d / "model"
    model.mkdir(exist_ok=True)
    rng = random.Random(0)
    partial = killed_mid = stale_seen = 0
    span = 0.03  # re-measured from every unkilled run, as are the runs' operations (fresh, replacing)
    steps: dict[bool, tuple[int, int]] = {}
    by_step = {"before_commit": 0, "in_commit": 0}
    commit_offsets: set[int] = set()  # which operations of the commit a kill landed just before
    for trial in range(n):
        if trial % 4 < 2 and out.exists():  # half the trials create the package, half replace it
            shutil.rmtree(out)
        force = out.exists()
        ops, commit_at = steps.get(force, (0, 0))
        if trial % 2 and ops:  # in steps: alternately anywhere in the run and inside the commit
            lo = commit_at if trial % 4 == 3 and commit_at else 1
            k = rng.randint(lo, ops)
            if commit_at and k >= commit_at:
                commit_offsets.add(k - commit_at)
            by_step["in_commit" if commit_at and k >= commit_at else "before_commit"] += 1
            pid = _fork(child, out, force, trial, model, k)
        else:  # in time
            pid = _fork(child, out, force, trial, model)
            time.sleep(rng.uniform(0, span))
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        killed_mid += os.WIFSIGNALED(status)
        if out.exists():
            try:
                verify(out)
            except Exception:
                partial += 1
        stale_seen += bool(leftovers(d))
        r, w = os.pipe()
        t0 = time.perf_counter()
        force = out.exists()
        pid = _fork(child, out, force, trial, model, 0, w)  # the next run, not killed: must clean up
        os.close(w)
        _, status = os.waitpid(pid, 0)
        span = time.perf_counter() - t0
        report = os.read(r, 100)
        os.close(r)
        if os.waitstatus_to_exitcode(status) != 0:
            return {"trials": trial + 1, "partial_packages": partial, "error": "the next run failed"}
        steps[force] = tuple(json.loads(report))
        verify(out)
        if leftovers(d):
            return {"trials": trial + 1, "error": f"leftovers after the next run: {leftovers(d)}"}
    return {"trials": n, "killed_mid_run": killed_mid, "partial_packages": partial,
            "trials_with_stale_entries_before_cleanup": stale_seen, "leftovers_after_next_run": 0,
            "step_kills": by_step, "distinct_commit_steps_killed": len(commit_offsets),
            "operations_per_run": {("replace" if f else "create"): o for f, (o, _) in sorted(steps.items())},
            "commit_operations": {("replace" if f else "create"): o - c + 1 for f, (o, c) in sorted(steps.items())}}


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]), Path(sys.argv[2]))))
