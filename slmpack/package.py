"""Package directories: atomic staging, manifest, hashing, verification.

A package is written into a hidden staging directory beside the output path and renamed into
place only when complete, so a failed export leaves nothing at the output path.

A quantized package's plan (its integers, for reuse with ``--quant-plan`` and for ``validate``'s
read-back) is a *sidecar*: the directory ``<package>.plan`` beside the package, staged and
committed with it, so the folder an app copies holds no plan integers.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path

from slmpack.errors import BadInputError, PackageIntegrityError, SlmpackError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
PLAN_SUFFIX = ".plan"


def plan_sidecar(pkg: Path) -> Path:
    """The plan sidecar of package ``pkg``: ``<pkg>.plan`` beside it (derived from the path the
    user gave, never from a manifest)."""
    pkg = Path(pkg)
    return pkg.with_name(pkg.name + PLAN_SUFFIX)


def sidecar_matches(pkg: Path) -> bool:
    """A float package has no sidecar to match; a quantized one needs ``<pkg>.plan`` whose
    quant_plan.json has the digest its manifest records."""
    from slmpack.calibration.plan_io import PLAN_JSON

    recorded = (read_manifest(pkg).get("quantization") or {}).get("plan_sha256")
    if recorded is None:
        return True
    side = plan_sidecar(pkg)
    if side.is_symlink() or not (side / PLAN_JSON).is_file() or sha256_file(side / PLAN_JSON) != recorded:
        return False
    from slmpack.confine import parse_json

    doc = parse_json((side / PLAN_JSON).read_bytes(), str(side / PLAN_JSON), "E_QUANT_PLAN_SCHEMA")
    if not isinstance(doc, dict):
        return False
    tensors = side / str(doc.get("tensors_file", ""))
    return (tensors.parent == side and tensors.is_file() and not tensors.is_symlink()
            and sha256_file(tensors) == doc.get("tensors_sha256"))


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


NAME_MAX = 255
STAMP_ROOM = 48  # ".NAME.staging-<pid>-<start>-<hex>" beyond NAME itself


def absolute_output(out: Path) -> Path:
    """``out`` as an absolute, normalised path (``.`` and ``..`` resolved lexically)."""
    return Path(os.path.abspath(out))


def _related(a: Path, b: Path) -> bool:
    return a == b or a in b.parents or b in a.parents


def check_output_path(out: Path, force: bool, model_dir: Path | None = None) -> None:
    """Fail fast (before any slow work) on an output we must not or cannot write.

    ``--force`` replaces only a directory that verifies as an slmpack package, and never the model
    directory, one of its ancestors or one of its descendants."""
    out = absolute_output(out)
    if not out.name or len(out.name.encode("utf-8", "surrogateescape")) + STAMP_ROOM > NAME_MAX:
        raise BadInputError(f"{str(out)[:200]}: unusable output name (empty or longer than "
                            f"{NAME_MAX - STAMP_ROOM} bytes)", "E_OUTPUT_UNWRITABLE")
    if os.path.islink(out):
        kind = "a dangling symlink" if not os.path.exists(out) else "a symlink"
        raise BadInputError(f"{out} is {kind}; refused (give a real directory path)", "E_OUTPUT_UNWRITABLE")
    parent = out.parent
    if not parent.is_dir():
        raise BadInputError(f"{parent} does not exist", "E_OUTPUT_UNWRITABLE")
    if out.exists():
        if not force:
            raise BadInputError(f"{out} already exists (use --force to replace it)", "E_OUTPUT_EXISTS")
        if not out.is_dir():
            raise BadInputError(f"{out} exists and is not a directory", "E_OUTPUT_EXISTS")
        if model_dir is not None and _related(Path(os.path.realpath(out)), Path(os.path.realpath(model_dir))):
            raise BadInputError(f"{out} is the model directory, inside it or one of its parents; --force never "
                                "replaces it", "E_OUTPUT_EXISTS")
        try:
            verify(out)
        except SlmpackError as e:
            raise BadInputError(f"{out} is not an slmpack package that verifies ({e.code}); --force only "
                                "replaces packages", "E_OUTPUT_EXISTS") from None
    _check_sidecar_path(plan_sidecar(out), force)
    from slmpack.staging import new_entry

    try:  # a real write probe: read-only file systems, /proc, ENAMETOOLONG, permissions
        os.rmdir(new_entry(out, "probe"))
    except OSError as e:
        raise BadInputError(f"{parent}: cannot create the package here ({e.strerror})",
                            "E_OUTPUT_UNWRITABLE") from None


def _check_sidecar_path(side: Path, force: bool) -> None:
    """``<out>.plan`` is ours to replace only with --force and only when it is a plan sidecar."""
    if not (side.exists() or os.path.islink(side)):
        return
    from slmpack.calibration.plan_io import PLAN_JSON

    if not force:
        raise BadInputError(f"{side} already exists (the plan sidecar of the output; use --force to replace it)",
                            "E_OUTPUT_EXISTS")
    if os.path.islink(side) or not side.is_dir() or not (side / PLAN_JSON).is_file():
        raise BadInputError(f"{side} exists and is not a plan sidecar; --force only replaces sidecars",
                            "E_OUTPUT_EXISTS")


def check_keep_failed(keep: Path | None) -> None:
    if keep is None:
        return
    keep = absolute_output(keep)
    if os.path.lexists(keep):
        raise BadInputError(f"--keep-failed {keep} already exists", "E_OUTPUT_EXISTS")
    if not keep.parent.is_dir() or not os.access(keep.parent, os.W_OK | os.X_OK):
        raise BadInputError(f"--keep-failed: {keep.parent} is not a writable directory", "E_OUTPUT_UNWRITABLE")


def _fix_modes(root: Path) -> None:
    for path in [root, *root.rglob("*")]:  # fixed modes: packages are byte- and mode-stable
        os.chmod(path, 0o755 if path.is_dir() else 0o644)


def discard_failed(stage: Path, keep: Path | None) -> Path | None:
    """A package that failed validation: move it to ``keep`` (if given), else remove it."""
    if keep is None:
        shutil.rmtree(stage, ignore_errors=True)
        return None
    keep = absolute_output(keep)
    _fix_modes(stage)
    shutil.move(str(stage), str(keep))
    return keep


@contextlib.contextmanager
def staged_directory(out: Path, force: bool, model_dir: Path | None = None):
    """Yield a staging dir; on success rename it to ``out`` (replacing it if ``force``).

    Runs under the per-output lock; stale staging from dead processes is removed first. Any
    exception (SIGTERM/SIGINT included) removes the staging dir; nothing appears at ``out``."""
    from slmpack.staging import new_entry, output_lock, raise_if_interrupted, remove_stale

    out = absolute_output(out)
    check_output_path(out, force, model_dir)
    with output_lock(out):
        remove_stale(out)
        staging = new_entry(out, "staging")
        side, out_side = plan_sidecar(staging), plan_sidecar(out)   # the export stages its plan beside staging
        try:
            yield staging
            raise_if_interrupted()  # a signal whose exception something swallowed: commit nothing
            if not staging.exists():  # the caller moved a failed package away
                shutil.rmtree(side, ignore_errors=True)
                return
            _fix_modes(staging)
            if side.exists():
                _fix_modes(side)
            if out.exists():
                check_output_path(out, force, model_dir)  # still a package (we hold the lock)
            trash = new_entry(out, "old")
            if out.exists():
                os.rename(out, trash / "old")
            if out_side.exists():   # an older package's plan goes with it
                os.rename(out_side, trash / "old.plan")
            if side.exists():
                os.rename(side, out_side)
            os.rename(staging, out)
            shutil.rmtree(trash, ignore_errors=True)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            shutil.rmtree(side, ignore_errors=True)
            raise


def read_manifest(pkg: Path) -> dict:
    pkg = Path(pkg)
    path = pkg / MANIFEST
    if not pkg.is_dir():
        raise BadInputError(f"{pkg}: not a directory", "E_PACKAGE_MISSING")
    if not path.is_file():
        raise BadInputError(f"{pkg}: no {MANIFEST} (not an slmpack package)", "E_PACKAGE_INVALID")
    from slmpack.confine import parse_json

    if path.is_symlink() or not path.is_file():
        raise BadInputError(f"{path}: not a regular file", "E_PACKAGE_INVALID")
    manifest = parse_json(path.read_bytes(), str(path), "E_PACKAGE_INVALID")
    if not isinstance(manifest, dict):
        raise BadInputError(f"{path}: expected a JSON object", "E_PACKAGE_INVALID")
    files = manifest.get("files", {})
    if not (isinstance(files, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in files.items())):
        raise BadInputError(f"{path}: 'files' must map file names to sha256 strings", "E_PACKAGE_INVALID")
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise BadInputError(f"{path}: schema_version {manifest.get('schema_version')!r} is not supported "
                            f"(this slmpack reads {SCHEMA_VERSION})", "E_PACKAGE_SCHEMA")
    return manifest


def verify(pkg: Path) -> dict:
    """Re-hash every file (the runtime kit's integrity check: regular files only, no symlinks,
    file-naming manifest fields inside ``files``); name changed, missing, extra and unsafe files.
    ``identity`` is the package identity (``integrity.manifest_identity``: sha256 of the canonical
    manifest, which lists every other file's sha256).
    Raises PackageIntegrityError (or BadInputError for an unreadable or invalid manifest)."""
    from slmpack.runtime import integrity

    pkg = Path(pkg)
    doc, identity = integrity.read_document(pkg)
    manifest = integrity.typed_manifest(doc)   # a decoder or an encoder package
    bad = integrity.check_files(pkg, manifest)
    by = {"sha256 mismatch": "changed", "missing": "missing", "not in manifest": "extra"}
    groups: dict[str, list[str]] = {"changed": [], "missing": [], "extra": [], "unsafe": []}
    for b in bad:
        groups[by.get(b.reason, "unsafe")].append(b.path if b.reason in by else f"{b.path} ({b.reason})")
    result = {"package": str(pkg), "identity": identity, "files": len(manifest.files), **groups, "ok": not bad}
    if bad:
        parts = [f"{name}: {', '.join(v)}" for name, v in groups.items() if v]
        raise PackageIntegrityError(f"{pkg}: " + "; ".join(parts), "E_PACKAGE_INTEGRITY", details=result)
    return result
