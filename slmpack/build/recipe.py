"""The build recipe: ``slmpack.toml`` (or ``[tool.slmpack]`` in pyproject.toml).

    out = "build/packages"            # optional output tree (default: slmpack-build/ beside the recipe)
    cache = ".slmpack-cache"          # optional cache dir (default: $SLMPACK_CACHE or ~/.cache/slmpack/build)

    [defaults]                        # optional: merged under every package
    context = 256

    [[package]]
    name = "chat"                     # output: <out>/<name>/<target>/
    model = "models/chat"             # HF directory or .gguf file (relative to the recipe), or "demo"
    targets = ["onnx", "tflite"]
    quant = "int8"                    # preset, a recipe file or "from-gguf"; or quant_plan = "path/to/package"
    algorithm = "gptq"                # optional (rtn | gptq | awq)
    calib_data = "texts/"             # optional calibration text
    eval_text = "heldout.txt"         # optional held-out text for the ladder
    context = 512                     # KV-cache length; max_prompt (default min(128, context))
    devices = ["rpi4"]                # refused up front unless it fits each device
    heldout_tokens = 512              # validation sizes (also greedy_tokens)

Paths are relative to the recipe's folder. Unknown keys are refused, naming the key.
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from slmpack.errors import BadInputError

TARGETS = ("onnx", "executorch", "tflite", "coreml")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _bad(where: str, why: str) -> BadInputError:
    return BadInputError(f"recipe {where}: {why}", "E_BUILD_RECIPE", details={"where": where})


@dataclass(frozen=True)
class PackageEntry:
    name: str
    model: Path | None              # None: the bundled demo model
    targets: tuple[str, ...]
    quant: str | None = None        # preset name, or a recipe file path (as given, resolved in quant_path)
    quant_plan: Path | None = None
    algorithm: str | None = None
    calib_data: Path | None = None
    calib_windows: int = 32
    calib_window_tokens: int = 256
    eval_text: Path | None = None
    context: int | None = None
    max_prompt: int | None = None   # None: min(128, context)
    devices: tuple[str, ...] = ()
    heldout_tokens: int = 512
    greedy_tokens: int = 32

    @property
    def quant_file(self) -> Path | None:
        """The quant recipe file when ``quant`` names one (not a preset)."""
        return Path(self.quant) if self.quant and self.quant.endswith((".toml", ".json")) else None


@dataclass(frozen=True)
class BuildUnit:
    """One package: an entry built for one target, at ``<out>/<name>/<target>``."""

    entry: PackageEntry
    target: str

    @property
    def label(self) -> str:
        return f"{self.entry.name}/{self.target}"


@dataclass(frozen=True)
class Recipe:
    path: Path
    packages: tuple[PackageEntry, ...]
    out: Path
    cache: Path | None

    def units(self, only: tuple[str, ...] = ()) -> list[BuildUnit]:
        units = [BuildUnit(e, t) for e in self.packages for t in e.targets]
        if only:
            known = {u.label for u in units} | {e.name for e in self.packages}
            for o in only:
                if o not in known:
                    raise _bad("--only", f"{o!r} names no package (have: {', '.join(sorted(known))})")
            units = [u for u in units if u.label in only or u.entry.name in only]
        return units


_PATH_KEYS = ("model", "quant_plan", "calib_data", "eval_text")
_FIELDS = {f.name for f in fields(PackageEntry)}


def _entry(raw: dict, defaults: dict, base: Path, where: str) -> PackageEntry:
    merged = {**defaults, **raw}
    unknown = sorted(set(merged) - _FIELDS)
    if unknown:
        raise _bad(where, f"unknown key {unknown[0]!r} (known: {', '.join(sorted(_FIELDS))})")
    name = merged.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise _bad(where, f"name must match {NAME.pattern}, got {name!r}")
    targets = merged.get("targets")
    if isinstance(targets, str):
        targets = [targets]
    if not targets or not isinstance(targets, list) or any(t not in TARGETS for t in targets):
        raise _bad(f"{where} ({name})", f"targets must be a list from {', '.join(TARGETS)}, got {targets!r}")
    kw: dict = {"name": name, "targets": tuple(dict.fromkeys(targets))}
    model = merged.get("model", "demo")
    kw["model"] = None if model == "demo" else (base / model)
    for k in _PATH_KEYS[1:]:
        if merged.get(k) is not None:
            kw[k] = base / str(merged[k])
    if merged.get("quant") is not None:
        q = str(merged["quant"])
        kw["quant"] = str(base / q) if q.endswith((".toml", ".json")) else q
    for k in ("algorithm",):
        if merged.get(k) is not None:
            kw[k] = str(merged[k])
    for k in ("calib_windows", "calib_window_tokens", "context", "max_prompt", "heldout_tokens", "greedy_tokens"):
        if merged.get(k) is not None:
            if not isinstance(merged[k], int) or isinstance(merged[k], bool) or merged[k] < 1:
                raise _bad(f"{where} ({name})", f"{k} must be a positive integer, got {merged[k]!r}")
            kw[k] = merged[k]
    devices = merged.get("devices", [])
    if isinstance(devices, str):
        devices = [devices]
    kw["devices"] = tuple(str(d) for d in devices)
    return PackageEntry(**kw)


def load_recipe(path: Path | None = None) -> Recipe:
    """Read ``path`` (slmpack.toml or a pyproject.toml with [tool.slmpack]); default: ./slmpack.toml,
    else ./pyproject.toml."""
    if path is None:
        path = Path("slmpack.toml") if Path("slmpack.toml").is_file() else Path("pyproject.toml")
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: recipe not found (write slmpack.toml or [tool.slmpack] in pyproject.toml)",
                            "E_BUILD_RECIPE_MISSING")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise _bad(str(path), f"invalid TOML ({e})") from None
    if path.name == "pyproject.toml":
        data = data.get("tool", {}).get("slmpack")
        if data is None:
            raise BadInputError(f"{path}: no [tool.slmpack] table", "E_BUILD_RECIPE_MISSING")
    unknown = sorted(set(data) - {"out", "cache", "defaults", "package"})
    if unknown:
        raise _bad(str(path), f"unknown top-level key {unknown[0]!r} (known: out, cache, defaults, package)")
    base = path.absolute().parent
    raw = data.get("package", [])
    if not isinstance(raw, list) or not raw:
        raise _bad(str(path), "no [[package]] entries")
    entries = tuple(_entry(r, data.get("defaults", {}), base, f"package[{i}]") for i, r in enumerate(raw))
    names = [e.name for e in entries]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise _bad(str(path), f"package name {dup!r} appears twice")
    out = base / data.get("out", "slmpack-build")
    cache = base / data["cache"] if data.get("cache") else None
    return Recipe(path=path.absolute(), packages=entries, out=out, cache=cache)
