"""Make a saved ``.mlpackage`` byte-for-byte reproducible.

coremltools writes three kinds of run-dependent bytes: random item UUIDs in ``Manifest.json``, a
``com.github.apple.coremltools.conversion_date`` metadata entry, and protobuf maps serialized in
insertion order (not guaranteed stable). It may also leave ``executorch_debug_handle_mapping.json``
(an ExecuTorch debugging aid Core ML never reads). We rewrite the manifest with name-derived UUIDs,
drop the date and the debug file, and re-serialize the model deterministically.
"""
from __future__ import annotations

import json
import uuid
from pathlib import Path

ROOT = "com.apple.CoreML"
DROP_METADATA = ("com.github.apple.coremltools.conversion_date",)
DROP_FILES = ("executorch_debug_handle_mapping.json",)
_NAMESPACE = uuid.UUID("5c6f4e1e-8b0e-4d0a-9a41-736c6d70636b")  # fixed: slmpack's own namespace


def _uuid(path: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, path)).upper()


def normalize(package: Path, metadata: dict[str, str] | None = None) -> list[str]:
    """Rewrite ``package`` in place; returns its files (sorted relative posix paths)."""
    package = Path(package)
    for name in DROP_FILES:
        (package / name).unlink(missing_ok=True)
    manifest_path = package / "Manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    entries, root = {}, None
    for key, item in sorted(manifest["itemInfoEntries"].items(), key=lambda kv: kv[1]["path"]):
        new_key = _uuid(item["path"])
        entries[new_key] = item
        if key == manifest["rootModelIdentifier"]:
            root = new_key
    manifest["itemInfoEntries"], manifest["rootModelIdentifier"] = entries, root
    manifest_path.write_text(json.dumps(manifest, indent=4, sort_keys=True) + "\n", encoding="utf-8")

    model_path = package / "Data" / manifest["itemInfoEntries"][root]["path"]
    from coremltools.proto import Model_pb2  # lazy: importing coremltools costs ~270 MB

    spec = Model_pb2.Model()
    spec.ParseFromString(model_path.read_bytes())
    user = spec.description.metadata.userDefined
    for key in DROP_METADATA:
        if key in user:
            del user[key]
    for key, value in sorted((metadata or {}).items()):
        user[key] = value
    model_path.write_bytes(spec.SerializeToString(deterministic=True))
    return sorted(p.relative_to(package).as_posix() for p in package.rglob("*") if p.is_file())
