"""Package directories: atomic staging, manifest, hashing, verification.

A package is written into a hidden staging directory beside the output path and renamed into
place only when complete, so a failed export leaves nothing at the output path.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from slmpack.errors import BadInputError, PackageIntegrityError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def hash_tree(root: Path) -> dict[str, str]:
    """sha256 of every file under root except the manifest, keyed by sorted posix relpath."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            rel = path.relative_to(root).as_posix()
            if rel != MANIFEST:
                out[rel] = sha256_file(path)
    return out


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def check_output_path(out: Path, force: bool) -> None:
    """Fail fast (before any slow work) on an output we must not or cannot write."""
    out = Path(out)
    if out.exists() and not force:
        raise BadInputError(f"{out} already exists (use --force to replace it)", "E_OUTPUT_EXISTS")
    if out.exists() and not out.is_dir():
        raise BadInputError(f"{out} exists and is not a directory", "E_OUTPUT_EXISTS")
    parent = out.absolute().parent
    if not parent.is_dir():
        raise BadInputError(f"{parent} does not exist", "E_OUTPUT_UNWRITABLE")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BadInputError(f"{parent} is not writable", "E_OUTPUT_UNWRITABLE")


@contextlib.contextmanager
def staged_directory(out: Path, force: bool):
    """Yield a staging dir; on success rename it to ``out`` (replacing it if ``force``)."""
    out = Path(out)
    check_output_path(out, force)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.absolute().parent))
    try:
        yield staging
        for path in [staging, *staging.rglob("*")]:  # fixed modes: packages are byte- and mode-stable
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        if out.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.absolute().parent))
            os.rename(out, trash / "old")
            os.rename(staging, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def read_manifest(pkg: Path) -> dict:
    pkg = Path(pkg)
    path = pkg / MANIFEST
    if not pkg.is_dir():
        raise BadInputError(f"{pkg}: not a directory", "E_PACKAGE_MISSING")
    if not path.is_file():
        raise BadInputError(f"{pkg}: no {MANIFEST} (not an slmpack package)", "E_PACKAGE_INVALID")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadInputError(f"{path}: invalid JSON ({e})", "E_PACKAGE_INVALID") from None
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise BadInputError(f"{path}: schema_version {manifest.get('schema_version')!r} is not supported "
                            f"(this slmpack reads {SCHEMA_VERSION})", "E_PACKAGE_SCHEMA")
    return manifest


def verify(pkg: Path) -> dict:
    """Re-hash every file (the runtime kit's integrity check: regular files only, no symlinks,
    file-naming manifest fields inside ``files``); name changed, missing, extra and unsafe files.
    Raises PackageIntegrityError (or BadInputError for an unreadable or invalid manifest)."""
    from slmpack.runtime import integrity

    pkg = Path(pkg)
    manifest = integrity.read_manifest(pkg)
    bad = integrity.check_files(pkg, manifest)
    by = {"sha256 mismatch": "changed", "missing": "missing", "not in manifest": "extra"}
    groups: dict[str, list[str]] = {"changed": [], "missing": [], "extra": [], "unsafe": []}
    for b in bad:
        groups[by.get(b.reason, "unsafe")].append(b.path if b.reason in by else f"{b.path} ({b.reason})")
    result = {"package": str(pkg), "files": len(manifest.files), **groups, "ok": not bad}
    if bad:
        parts = [f"{name}: {', '.join(v)}" for name, v in groups.items() if v]
        raise PackageIntegrityError(f"{pkg}: " + "; ".join(parts), "E_PACKAGE_INTEGRITY", details=result)
    return result
