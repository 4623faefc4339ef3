"""The cache key of a build unit: sha256 over a canonical JSON of everything the package depends on.

* the checkpoint folder: every regular file directly in it (weights, config, tokenizer, chat
  template, generation config), by content; its folder name (recorded in the manifest); or a
  ``.gguf`` file, by content and name;
* every file a path field names (quant recipe, quant plan package, calibration data, held-out
  text), by content, plus its basename;
* the recipe entry's other fields and the target (not the entry name: two entries with equal
  inputs share one cached package);
* the toolchain actually installed (name==version of every distribution in the environment);
* slmpack's version and the sha256 of its own source files.

File digests are memoised by (path, size, mtime_ns, inode) in ``filehash.json`` in the cache, so an
up-to-date check does not re-read gigabytes of weights.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import site
import sys
import tempfile
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from slmpack.build.recipe import BuildUnit
from slmpack.errors import BadInputError
from slmpack.exporter.gguf.reader import is_gguf
from slmpack.package import sha256_file

KEY_VERSION = 1


class FileHasher:
    """sha256 of files, memoised on disk by stat signature."""

    def __init__(self, memo: Path | None):
        self.memo = memo
        self._table: dict[str, list] = {}
        self._dirty = False
        if memo is not None and memo.is_file():
            try:
                self._table = json.loads(memo.read_text())
            except (OSError, json.JSONDecodeError):
                self._table = {}

    def digest(self, path: Path) -> str:
        st = path.stat()
        sig = [st.st_size, st.st_mtime_ns, st.st_ino]
        key = str(path.absolute())
        hit = self._table.get(key)
        if hit and hit[:3] == sig:
            return hit[3]
        d = sha256_file(path)
        self._table[key] = sig + [d]
        self._dirty = True
        return d

    def save(self) -> None:
        if self.memo is None or not self._dirty:
            return
        self.memo.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.memo.parent, prefix=".filehash-")
        with os.fdopen(fd, "w") as f:
            json.dump(self._table, f)
        os.replace(tmp, self.memo)  # a racing writer's table may win: entries are only a memo


def _tree(path: Path, hasher: FileHasher, recursive: bool) -> dict[str, str]:
    """Digests of the regular files of a folder (no symlinks out of it, no hidden files)."""
    root = path.resolve()
    files = sorted(path.rglob("*") if recursive else path.iterdir())
    out = {}
    for f in files:
        rel = f.relative_to(path)
        if any(part.startswith(".") for part in rel.parts) or not f.is_file():
            continue
        if not f.resolve().is_relative_to(root):
            raise BadInputError(f"{f}: symlink points outside {path}", "E_BUILD_INPUT")
        out[rel.as_posix()] = hasher.digest(f)
    return out


def path_digest(path: Path, hasher: FileHasher, recursive: bool = True) -> dict:
    if not path.exists():
        raise BadInputError(f"{path}: no such file or directory (named by the recipe)", "E_BUILD_INPUT")
    if path.is_dir():
        return {"name": path.name, "files": _tree(path, hasher, recursive)}
    return {"name": path.name, "sha256": hasher.digest(path)}


def _install_path() -> list[str]:
    """sys.path less the folders inside site-packages: those are a package's vendored copies (Ray puts
    its ``thirdparty_files`` on the path when imported), part of that package, not installs of their own."""
    roots = [Path(p).resolve() for p in site.getsitepackages()]
    entries = [Path(p or ".").resolve() for p in sys.path]
    return [str(p) for p in entries if not any(p != r and p.is_relative_to(r) for r in roots)]


@lru_cache(maxsize=1)
def toolchain() -> dict:
    """What is installed: name==version of every distribution, and slmpack's version + source digest.
    The same whether or not Ray was imported first (the driver plans before it does; a worker after)."""
    dists = sorted({f"{d.metadata['Name'].lower()}=={d.version}" for d in metadata.distributions(path=_install_path())
                    if d.metadata["Name"] and d.metadata["Name"].lower() != "slmpack"})
    return {"distributions": hashlib.sha256("\n".join(dists).encode()).hexdigest(),
            "slmpack": _slmpack_version(), "slmpack_source": _source_digest()}


def _slmpack_version() -> str:
    import slmpack

    return slmpack.__version__


def _source_digest() -> str:
    """sha256 over slmpack's own modules and data (tests excluded): code changes invalidate the cache."""
    import slmpack
    from slmpack import calibration, device_tests, exporter, targets

    h = hashlib.sha256()
    for mod in (slmpack, exporter, calibration, targets, device_tests):
        root = Path(mod.__file__).parent
        for f in sorted(root.rglob("*")):
            rel = f.relative_to(root).as_posix()
            if not f.is_file() or "__pycache__" in rel or f.name.startswith("test_") or f.suffix == ".pyc":
                continue
            h.update(f"{mod.__name__}/{rel}\0".encode())
            h.update(sha256_file(f).encode())
    return h.hexdigest()


def unit_inputs(unit: BuildUnit, hasher: FileHasher) -> dict:
    """The canonical description of everything ``unit``'s package depends on."""
    from slmpack.bundled import demo_model_dir

    e = unit.entry
    model = e.model if e.model is not None else demo_model_dir()
    if not (model.is_dir() or (is_gguf(model) and model.is_file())):
        raise BadInputError(f"{model}: model directory or .gguf file not found (package {e.name})",
                            "E_MODEL_DIR_MISSING")
    doc = {"key_version": KEY_VERSION, "target": unit.target, "model": path_digest(model, hasher, recursive=False)}
    for f in dataclasses.fields(e):
        v = getattr(e, f.name)
        if f.name in ("name", "model", "targets", "devices"):
            continue  # name/targets: where it goes; devices: a gate checked every run, not content
        if isinstance(v, Path):
            doc[f.name] = path_digest(v, hasher)
        elif f.name == "quant" and e.quant_file is not None:
            doc[f.name] = path_digest(e.quant_file, hasher)
        else:
            doc[f.name] = v
    doc["toolchain"] = toolchain()
    return doc


def input_files(unit: BuildUnit) -> list[Path]:
    """Every file the package's key reads (for build systems' DEPENDS / inputs), sorted."""
    from slmpack.bundled import demo_model_dir

    e = unit.entry
    roots = [(e.model or demo_model_dir(), False)] + [(v, True) for v in (e.quant_plan, e.calib_data, e.eval_text,
                                                                          e.quant_file) if v is not None]
    files: set[Path] = set()
    for root, recursive in roots:
        if root.is_file():
            files.add(root.absolute())
        elif root.is_dir():
            files.update(f.absolute() for f in (root.rglob("*") if recursive else root.iterdir())
                         if f.is_file() and not any(p.startswith(".") for p in f.relative_to(root).parts))
    return sorted(files)


def unit_key(unit: BuildUnit, hasher: FileHasher) -> str:
    doc = unit_inputs(unit, hasher)
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
