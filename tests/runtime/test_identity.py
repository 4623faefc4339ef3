"""Issue 17, item 1: the package identity is the sha256 of the canonical manifest, shown by
``verify`` (text and --json), by ``slmpack.load(pkg).identity`` and by the device runner."""
from __future__ import annotations

import copy
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import slmpack
from slmpack.runtime.integrity import manifest_identity, read_identified
from tests.runtime.test_package_hardening import cli, device


def expected_identity(pkg: Path) -> str:
    """Computed here from the definition, not through slmpack: sorted keys, no whitespace, ASCII."""
    doc = json.loads((pkg / "manifest.json").read_text(encoding="utf-8"))
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    return "sha256:" + hashlib.sha256(canonical).hexdigest()


def reordered(value):
    """The same JSON value with every object's keys in reverse order."""
    if isinstance(value, dict):
        return {k: reordered(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [reordered(v) for v in value]
    return value


def leaves(value, path=()):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from leaves(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from leaves(v, (*path, i))
    else:
        yield path, value


def changed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value * 2 + 1
    if isinstance(value, str):
        return value + "x"
    return 0  # null


def test_identity_is_the_sha256_of_the_canonical_manifest_everywhere(kit_package):
    want = expected_identity(kit_package)
    raw = "sha256:" + hashlib.sha256((kit_package / "manifest.json").read_bytes()).hexdigest()
    assert want != raw  # the file is indented: the identity is of the canonical form, not the bytes
    assert read_identified(kit_package)[1] == want
    assert slmpack.load(kit_package).identity == want
    rc, doc = cli("verify", str(kit_package))
    assert rc == 0 and doc["identity"] == want, doc
    proc = subprocess.run([sys.executable, "-m", "slmpack.cli", "verify", str(kit_package)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0 and f"identity: {want}" in proc.stdout.splitlines(), proc.stdout + proc.stderr
    rc, doc = device(kit_package)  # the torch-free device runner reports the same identity
    assert rc == 0 and doc["identity"] == want, doc


def test_identity_survives_reformatting_and_key_order(pkg_copy):
    want = expected_identity(pkg_copy)
    doc = json.loads((pkg_copy / "manifest.json").read_text(encoding="utf-8"))
    for text in (json.dumps(reordered(doc)), json.dumps(doc, indent="\t", ensure_ascii=False) + "\n\n",
                 json.dumps(reordered(doc), indent=7, separators=(" ,", " : "))):
        assert text != (pkg_copy / "manifest.json").read_text(encoding="utf-8")
        (pkg_copy / "manifest.json").write_text(text, encoding="utf-8")
        rc, out = cli("verify", str(pkg_copy))
        assert rc == 0 and out["identity"] == want, out


def test_identity_changes_when_any_manifest_value_changes(pkg_copy):
    doc = json.loads((pkg_copy / "manifest.json").read_text(encoding="utf-8"))
    base = manifest_identity(doc)
    seen = {base}
    paths = list(leaves(doc))
    assert len(paths) > 50  # a real manifest: files, io signature, toolchain, validation...
    for path, value in paths:
        edited = copy.deepcopy(doc)
        node = edited
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = changed(value)
        seen.add(manifest_identity(edited))
    assert len(seen) == len(paths) + 1  # every single-value edit gives its own identity
    # end to end: a changed value that still verifies (a toolchain version) is a different package
    doc["toolchain"] = {k: v + ".post1" for k, v in doc["toolchain"].items()}
    (pkg_copy / "manifest.json").write_text(json.dumps(doc), encoding="utf-8")
    rc, out = cli("verify", str(pkg_copy))
    assert rc == 0 and out["identity"] == expected_identity(pkg_copy) != base, out
