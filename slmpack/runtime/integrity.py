"""Package integrity (standard library only): a package is a directory of regular files, each
listed in the manifest's ``files`` with its sha256, nothing else, and nothing reached through a
symlink. The manifest's own file-naming fields are checked by ``Manifest.check_files`` (each is a
plain relative path and an entry of ``files``), so together nothing a manifest names can lie
outside the package.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import BadInputError, ErrorCode, PackageIntegrityError
from .encoder_manifest import EncoderManifest, is_encoder_document
from .manifest import MANIFEST_FILE, Manifest


@dataclass(frozen=True)
class BadFile:
    path: str
    reason: str   # "sha256 mismatch" | "missing" | "not in manifest" | "symlink" | "not a regular file"

    def to_json(self) -> dict:
        return {"path": self.path, "reason": self.reason}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def walk(root: Path) -> tuple[dict[str, str], list[BadFile]]:
    """({relpath: kind} of every entry under ``root``, never following a link; problems)."""
    entries, bad = {}, []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            mode = os.lstat(p).st_mode
            if stat.S_ISLNK(mode):
                bad.append(BadFile(rel, "symlink"))
                if name in dirnames:
                    dirnames.remove(name)
            elif stat.S_ISREG(mode):
                entries[rel] = "file"
            elif not stat.S_ISDIR(mode):
                bad.append(BadFile(rel, "not a regular file"))
    return entries, bad


def canonical_manifest(doc: Any) -> bytes:
    """The canonical bytes of a parsed ``manifest.json``: the whole document (``validation``
    included), keys sorted at every level, no whitespace, non-ASCII as ``\\uXXXX`` escapes (so the
    bytes are ASCII and a lone surrogate cannot fail to encode), numbers as Python's ``json``
    writes them. Re-indenting or reordering the file keeps these bytes; changing any value changes
    them. (Duplicate keys count as the JSON parser keeps them: the last one.)"""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def manifest_identity(doc: Any) -> str:
    """The package identity: ``sha256:`` + the hex sha256 of ``canonical_manifest(doc)``. The
    manifest lists every other file's sha256, so this one digest names the whole package."""
    return "sha256:" + hashlib.sha256(canonical_manifest(doc)).hexdigest()


def read_identified(pkg: Path) -> tuple[Manifest, str]:
    """The typed manifest of ``pkg`` (a real directory holding a regular manifest.json) and the
    package identity, both from one read of the file."""
    doc, identity = read_document(pkg)
    return Manifest.from_json(doc), identity


def read_document(pkg: Path) -> tuple[Any, str]:
    """The parsed manifest.json of ``pkg`` (untyped: decoder or encoder) and the package identity."""
    pkg = Path(pkg)
    if pkg.is_symlink() or not pkg.is_dir():
        raise BadInputError(f"{pkg}: not a package directory", ErrorCode.E_PACKAGE_MISSING)
    path = pkg / MANIFEST_FILE
    if path.is_symlink() or not path.is_file():
        raise BadInputError(f"{pkg}: no regular {MANIFEST_FILE} (not an slmpack package)",
                            ErrorCode.E_PACKAGE_INVALID)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        identity = manifest_identity(doc)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BadInputError(f"{path}: invalid JSON ({type(exc).__name__})", ErrorCode.E_PACKAGE_INVALID) from None
    return doc, identity


def typed_manifest(doc: Any) -> Manifest | EncoderManifest:
    """A parsed manifest.json as its typed record: an ``EncoderManifest`` (``encoder`` present) or a
    decoder ``Manifest``; either way every file-naming field is an entry of ``files``."""
    return EncoderManifest.from_json(doc) if is_encoder_document(doc) else Manifest.from_json(doc)


def read_typed(pkg: Path) -> Manifest | EncoderManifest:
    """The typed manifest of ``pkg``, decoder or encoder."""
    return typed_manifest(read_document(pkg)[0])


def read_manifest(pkg: Path) -> Manifest:
    """The typed manifest of ``pkg`` (a real directory holding a regular manifest.json)."""
    return read_identified(pkg)[0]


def check_files(pkg: Path, manifest: Manifest) -> list[BadFile]:
    """Every listed file present, regular and unchanged; nothing unlisted; no links anywhere."""
    pkg = Path(pkg)
    entries, bad = walk(pkg)
    for rel in sorted(manifest.files):
        kind = entries.get(rel)
        if kind is None:
            if not any(b.path == rel or rel.startswith(b.path + "/") for b in bad):
                bad.append(BadFile(rel, "missing"))
        elif sha256_file(pkg / rel) != manifest.files[rel]:
            bad.append(BadFile(rel, "sha256 mismatch"))
    bad += [BadFile(rel, "not in manifest") for rel in sorted(entries)
            if rel != MANIFEST_FILE and rel not in manifest.files]
    return sorted(bad, key=lambda b: (b.path, b.reason))


def check_safe(pkg: Path) -> Manifest | EncoderManifest:
    """The typed manifest (decoder or encoder), if nothing under ``pkg`` is a symlink or a non-regular file (hashes are
    not compared: a changed file is for the device's own check to find and report)."""
    manifest = read_typed(pkg)
    _, bad = walk(Path(pkg))
    if bad:
        raise PackageIntegrityError(f"{pkg}: " + "; ".join(f"{b.path}: {b.reason}" for b in bad[:20]),
                                    ErrorCode.E_PACKAGE_INTEGRITY, details={"bad_files": [b.to_json() for b in bad]})
    return manifest


def verify(pkg: Path) -> tuple[Manifest, str]:
    """The typed manifest and the package identity, or PackageIntegrityError naming every bad file."""
    manifest, identity = read_identified(pkg)
    require_intact(pkg, manifest)
    return manifest, identity


def require_intact(pkg: Path, manifest) -> None:
    """PackageIntegrityError naming every bad file (``manifest``: any record with ``files``)."""
    bad = check_files(pkg, manifest)
    if bad:
        raise PackageIntegrityError(f"{pkg}: " + "; ".join(f"{b.path}: {b.reason}" for b in bad[:20]),
                                    ErrorCode.E_PACKAGE_INTEGRITY,
                                    details={"bad_files": [b.to_json() for b in bad]})


__all__ = ["BadFile", "sha256_file", "walk", "canonical_manifest", "manifest_identity", "read_identified",
           "read_document", "read_manifest", "typed_manifest", "read_typed", "check_files", "check_safe", "require_intact", "verify"]
