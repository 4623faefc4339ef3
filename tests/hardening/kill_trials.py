"""kill -9 at random moments of staging and commit, many times; run as ``python -m tests.hardening.kill_trials N DIR``.

Each trial forks a child that writes a package through ``staged_directory`` (20 files, a manifest,
the commit renames; every other trial replaces the existing package with --force) and SIGKILLs it
after a random delay. After each kill: ``DIR/pkg`` is absent or a package that verifies (never
partial). Then an unkilled run must succeed and leave nothing beside ``pkg``. Prints one JSON line.
"""
from __future__ import annotations

import json
import os
import random
import signal
import sys
import time
from pathlib import Path

from slmpack.package import MANIFEST, hash_tree, staged_directory, verify, write_json
from tests.test_manifest_record import _manifest as valid_manifest


def write_package(out: Path, force: bool, seed: int) -> None:
    with staged_directory(out, force) as stage:
        for i in range(20):
            (stage / f"part{i:02d}.bin").write_bytes(os.urandom(4096 + seed % 97))
            time.sleep(0.0005)
        manifest = valid_manifest()  # a complete typed manifest (verify checks the schema too)
        for name in manifest["files"]:
            (stage / name).write_bytes(os.urandom(64))
        write_json(stage / MANIFEST, {**manifest, "files": hash_tree(stage)})


def child(out: Path, force: bool, seed: int) -> None:
    try:
        write_package(out, force, seed)
    finally:
        os._exit(0)


def leftovers(d: Path) -> list[str]:
    return sorted(n for n in os.listdir(d) if n != "pkg")


def main(n: int, d: Path) -> dict:
    out = d / "pkg"
    rng = random.Random(0)
    partial = killed_mid = 0
    stale_seen = 0
    span = 0.03  # re-measured from every unkilled run: kills land uniformly over a whole run
    for trial in range(n):
        force = out.exists()
        pid = os.fork()
        if pid == 0:
            child(out, force, trial)
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
        t0 = time.perf_counter()
        pid = os.fork()  # the next run, not killed: must clean up what the dead one left
        if pid == 0:
            child(out, out.exists(), trial)
        os.waitpid(pid, 0)
        span = time.perf_counter() - t0
        verify(out)
        if leftovers(d):
            return {"trials": trial + 1, "error": f"leftovers after the next run: {leftovers(d)}"}
    return {"trials": n, "killed_mid_run": killed_mid, "partial_packages": partial,
            "trials_with_stale_entries_before_cleanup": stale_seen, "leftovers_after_next_run": 0}


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]), Path(sys.argv[2]))))
