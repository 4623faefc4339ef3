"""The content-addressed package store shared by builds (local processes or Ray workers).

    <cache>/objects/<key>/     a complete package that verified when stored (re-verified on use)
    <cache>/objects/<key>.plan/  its plan sidecar (quantized packages), stored and published with it
    <cache>/locks/<key>.lock   held (fcntl.flock) while a key is being built or checked
    <cache>/tmp/               staging: a package is built here, verified, then renamed into objects/

Two builds that want one key serialise on its lock; the second finds the object the first stored.
A package that does not verify (corrupted or half-copied) is never served: it is moved aside and
rebuilt. Outputs are published by copying into a staging folder beside the output and renaming.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from pathlib import Path

from slmpack.errors import BadInputError, PackageIntegrityError
from slmpack.package import plan_sidecar, sidecar_matches, verify


def default_cache_dir() -> Path:
    env = os.environ.get("SLMPACK_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "slmpack" / "build"


@contextlib.contextmanager
def file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


class Store:
    def __init__(self, root: Path):
        self.root = Path(root)
        for sub in ("objects", "locks", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def object(self, key: str) -> Path:
        return self.root / "objects" / key

    def lock(self, key: str):
        return file_lock(self.root / "locks" / f"{key}.lock")

    def verified(self, key: str) -> Path | None:
        """The stored package for ``key`` if present and every file still matches its manifest."""
        obj = self.object(key)
        if not obj.is_dir():
            return None
        try:
            verify(obj)
            ok = sidecar_matches(obj)
        except (PackageIntegrityError, BadInputError):  # an unreadable manifest is corrupt too
            ok = False
        if not ok:   # a quantized package is stored with its plan, or not at all
            for part in (obj, plan_sidecar(obj)):
                if part.exists():
                    self._discard(part)
            return None
        return obj

    def staging(self) -> Path:
        return Path(tempfile.mkdtemp(prefix="build-", dir=self.root / "tmp"))

    def put(self, key: str, package: Path) -> Path:
        """Move a freshly built package (inside ``staging()``) into the store after verifying it.
        Call with the key's lock held."""
        verify(package)
        obj = self.object(key)
        for old in (obj, plan_sidecar(obj)):
            if old.exists():
                self._discard(old)
        if plan_sidecar(package).is_dir():
            os.rename(plan_sidecar(package), plan_sidecar(obj))
        os.rename(package, obj)
        return obj

    def _discard(self, path: Path) -> None:
        trash = Path(tempfile.mkdtemp(prefix="discard-", dir=self.root / "tmp"))
        os.rename(path, trash / "x")
        shutil.rmtree(trash, ignore_errors=True)


def stat_signature(pkg: Path) -> dict[str, list[int]]:
    return {f.relative_to(pkg).as_posix(): [f.stat().st_size, f.stat().st_mtime_ns]
            for f in sorted(pkg.rglob("*")) if f.is_file()}


def published_plan(state: Path) -> Path:
    """Where a published package's plan sidecar goes: beside its state record, in the output
    tree's hidden ``.slmpack-build/`` (the visible tree is what an app bundles: Android's asset
    packaging skips hidden entries, the Xcode script excludes it)."""
    return state.with_suffix(".plan")


def publish(obj: Path, out: Path, key: str, state: Path) -> None:
    """Copy the stored package ``obj`` to ``out`` atomically (its plan sidecar to
    ``published_plan(state)``) and record ``key`` for up-to-date checks."""
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    plan = published_plan(state)
    try:
        shutil.copytree(obj, stage / "pkg", copy_function=shutil.copy2)
        verify(stage / "pkg")
        if out.exists():
            os.rename(out, stage / "old")
        os.rename(stage / "pkg", out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    plan.parent.mkdir(parents=True, exist_ok=True)
    if plan.exists():
        shutil.rmtree(plan)
    if plan_sidecar(obj).is_dir():
        shutil.copytree(plan_sidecar(obj), plan, copy_function=shutil.copy2)
    write_state(state, {"key": key, "files": stat_signature(out)})


def write_state(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, sort_keys=True)
    os.replace(tmp, path)


def up_to_date(out: Path, key: str, state: Path) -> bool:
    """``out`` holds the package of ``key``, untouched since it was published."""
    try:
        data = json.loads(state.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return data.get("key") == key and out.is_dir() and data.get("files") == stat_signature(out)
