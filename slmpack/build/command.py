"""`slmpack build [RECIPE] [--jobs N] [--check] [--json]`: every package of a recipe, incrementally.

For each package (recipe entry x target): compute its key (slmpack.build.inputs); if the output
already holds that key's package, untouched, it is up to date; else if the cache holds a package
that verifies, copy it out; else export it (``slmpack.api.export``, validated) into the cache under
the key's lock and publish it. Packages build in parallel with ``--jobs N`` (one process each).
"""
from __future__ import annotations

import enum
import json
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

from slmpack import quiet
from slmpack.build import cache
from slmpack.build.inputs import FileHasher, unit_key
from slmpack.build.recipe import BuildUnit, Recipe, load_recipe
from slmpack.errors import BuildFailed, BuildStale, SlmpackError, ToolchainError

QUANT_BITS = {"int8": 8, "w8a8": 8, "int4": 4, "8da4w": 4}


class Status(str, enum.Enum):
    UP_TO_DATE = "up-to-date"    # output already holds this key's package
    FROM_CACHE = "from-cache"    # copied out of the cache (built earlier, elsewhere or by another build)
    BUILT = "built"
    STALE = "stale"              # --check: would be built or copied
    FAILED = "failed"


@dataclass(frozen=True)
class UnitResult:
    label: str
    path: str
    key: str
    status: Status
    seconds: float
    error: dict | None = None

    def to_json(self) -> dict:
        return {"package": self.label, "path": self.path, "key": self.key, "status": self.status.value,
                "seconds": round(self.seconds, 2), **({"error": self.error} if self.error else {})}


def add_parser(sub, common) -> None:
    p = sub.add_parser("build", help="build every package of a recipe (slmpack.toml), reusing the cache",
                       description="Build each package listed in RECIPE (slmpack.toml, or pyproject.toml with "
                       "[tool.slmpack]) that is missing or stale, through a content-addressed cache; an "
                       "up-to-date build does no work.")
    p.add_argument("recipe", nargs="?", type=Path, default=None, help="recipe file (default: ./slmpack.toml)")
    p.add_argument("--out", "-o", type=Path, default=None, help="output tree (default: the recipe's `out`)")
    p.add_argument("--cache", type=Path, default=None,
                   help="cache folder (default: the recipe's `cache`, $SLMPACK_CACHE or ~/.cache/slmpack/build)")
    p.add_argument("--jobs", "-j", type=int, default=1, help="packages built at once, one process each (default 1)")
    p.add_argument("--only", action="append", default=[], metavar="NAME[/TARGET]",
                   help="build only these packages (repeatable)")
    p.add_argument("--check", action="store_true", help="build nothing; exit 1 if any package is stale")
    p.add_argument("--list", action="store_true",
                   help="build nothing; print each package's output folder and input files (for build systems)")
    p.add_argument("--stamp", type=Path, default=None,
                   help="touch this file after a successful build (for make/ninja/Gradle outputs)")
    common(p)


def output_root(args) -> Path:
    return args.out or load_recipe(args.recipe).out


@dataclass(frozen=True)
class Layout:
    out: Path
    cache: Path

    def package(self, u: BuildUnit) -> Path:
        return self.out / u.entry.name / u.target

    def state(self, u: BuildUnit) -> Path:
        return self.out / ".slmpack-build" / u.entry.name / f"{u.target}.json"

    def log(self, u: BuildUnit) -> Path:
        return self.out / u.entry.name / f"{u.target}.build.log"


def _gate_devices(u: BuildUnit) -> None:
    if not u.entry.devices:
        return
    from slmpack.device_tests import fit_check
    from slmpack.bundled import demo_model_dir

    model = u.entry.model or demo_model_dir()
    for d in u.entry.devices:
        fit_check(model, d, u.entry.context, QUANT_BITS.get(u.entry.quant or "", 32))


def export_unit(u: BuildUnit, dest: Path) -> None:
    """Export one package to ``dest`` with the Python API; raise unless it validated."""
    from slmpack import api
    from slmpack.config import ExportConfig, TraceConfig, ValidationConfig
    from slmpack.exporter.pipeline import require_passed
    from slmpack.quantize_config import QuantConfig

    e = u.entry
    quant = QuantConfig(recipe=e.quant, calib_data=e.calib_data, calib_windows=e.calib_windows,
                        calib_window_tokens=e.calib_window_tokens, algorithm=e.algorithm, plan_from=e.quant_plan)
    max_prompt = e.max_prompt or min(TraceConfig.max_prompt, e.context or TraceConfig.max_prompt)
    cfg = ExportConfig(trace=TraceConfig(max_context=e.context, max_prompt=max_prompt),
                       validation=ValidationConfig(heldout_tokens=e.heldout_tokens, greedy_tokens=e.greedy_tokens),
                       quant=quant)
    pkg = api.export(e.model, u.target, dest, cfg, eval_text=e.eval_text)
    require_passed(pkg)


def build_into_cache(u: BuildUnit, key: str, cache_root: Path, log: Path) -> tuple[Status, dict | None]:
    """Make ``key``'s package exist in the cache (build it unless a verified one is there)."""
    store = cache.Store(cache_root)
    with store.lock(key):
        if store.verified(key) is not None:
            return Status.FROM_CACHE, None
        stage = store.staging()
        try:
            with quiet.captured(log):
                quiet.quiet_third_party()
                export_unit(u, stage / "pkg")
            store.put(key, stage / "pkg")
            return Status.BUILT, None
        except SlmpackError as e:
            return Status.FAILED, e.to_json() | {"log": str(log)}
        except Exception as e:  # a converter bug: reported for this package, the others go on
            err = ToolchainError(f"internal toolchain failure: {type(e).__name__}: {str(e)[:300]}", "E_INTERNAL")
            return Status.FAILED, err.to_json() | {"log": str(log)}
        finally:
            shutil.rmtree(stage, ignore_errors=True)


def _worker(u: BuildUnit, key: str, cache_root: Path, log: Path) -> tuple[Status, dict | None]:
    quiet.quiet_env()
    return build_into_cache(u, key, cache_root, log)


def plan(recipe: Recipe, layout: Layout, only: tuple[str, ...]) -> list[tuple[BuildUnit, str, bool]]:
    """(unit, key, up to date) for every selected package."""
    hasher = FileHasher(layout.cache / "filehash.json")
    rows = []
    for u in recipe.units(only):
        key = unit_key(u, hasher)
        rows.append((u, key, cache.up_to_date(layout.package(u), key, layout.state(u))))
    hasher.save()
    return rows


def run_build(recipe: Recipe, layout: Layout, jobs: int = 1, only: tuple[str, ...] = (), check: bool = False,
              on_result=lambda r: None) -> list[UnitResult]:
    t0 = time.perf_counter()
    rows = plan(recipe, layout, only)
    results: dict[str, UnitResult] = {}

    def done(u: BuildUnit, key: str, status: Status, started: float, error: dict | None = None) -> None:
        r = UnitResult(u.label, str(layout.package(u)), key, status, time.perf_counter() - started, error)
        results[u.label] = r
        on_result(r)

    todo = []
    for u, key, fresh in rows:
        if fresh:
            done(u, key, Status.UP_TO_DATE, t0)
        elif check:
            done(u, key, Status.STALE, t0)
        else:
            todo.append((u, key))
    gated = []
    for u, key in todo:
        try:
            _gate_devices(u)
            gated.append((u, key))
        except SlmpackError as e:
            done(u, key, Status.FAILED, time.perf_counter(), e.to_json())
    store_root = layout.cache
    cache.Store(store_root)
    if jobs > 1 and len(gated) > 1:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
            futures = [(u, key, time.perf_counter(), pool.submit(_worker, u, key, store_root, layout.log(u)))
                       for u, key in gated]
            for u, key, started, fut in futures:
                _finish(u, key, started, *fut.result(), layout, done)
    else:
        for u, key in gated:
            started = time.perf_counter()
            _finish(u, key, started, *build_into_cache(u, key, store_root, layout.log(u)), layout, done)
    return [results[u.label] for u, _, _ in rows]


def _finish(u: BuildUnit, key: str, started: float, status: Status, error: dict | None, layout: Layout,
            done) -> None:
    if status is Status.FAILED:
        return done(u, key, status, started, error)
    store = cache.Store(layout.cache)
    with cache.file_lock(layout.state(u).with_suffix(".lock")), store.lock(key):
        obj = store.verified(key)
        if obj is None:  # removed or corrupted between build and publish: never publish it
            return done(u, key, Status.FAILED, started, {"error": "E_CACHE_CORRUPT",
                                                         "message": f"cached package {key[:12]} does not verify"})
        cache.publish(obj, layout.package(u), key, layout.state(u))
    done(u, key, status, started)


def cmd_build(args) -> int:
    from slmpack.progress import Progress

    recipe = load_recipe(args.recipe)
    layout = Layout(out=(args.out or recipe.out).absolute(),
                    cache=(args.cache or recipe.cache or cache.default_cache_dir()).absolute())
    progress = Progress(enabled=not args.json, file=quiet.stderr())

    def report(r: UnitResult) -> None:
        if progress.enabled:
            extra = f" error[{r.error.get('error')}]: {r.error.get('message')}" if r.error else ""
            print(f"[{r.label}] {r.status.value} {r.seconds:.1f}s{extra}", file=quiet.stderr(), flush=True)

    if args.jobs < 1:
        from slmpack.errors import BadInputError

        raise BadInputError("--jobs must be >= 1", "E_CONFIG")
    if args.list:
        from slmpack.build.inputs import input_files

        units = [{"package": u.label, "path": str(layout.package(u)),
                  "inputs": [str(f) for f in [recipe.path, *input_files(u)]]} for u in recipe.units(tuple(args.only))]
        quiet.stdout().write(json.dumps({"packages": units}, indent=2) + "\n")
        return 0
    t0 = time.perf_counter()
    results = run_build(recipe, layout, args.jobs, tuple(args.only), args.check, report)
    counts = {s.value: sum(r.status is s for r in results) for s in Status}
    summary = {"recipe": str(recipe.path), "out": str(layout.out), "cache": str(layout.cache),
               "seconds": round(time.perf_counter() - t0, 2), "counts": counts,
               "reused": counts["up-to-date"] + counts["from-cache"], "built": counts["built"],
               "packages": [r.to_json() for r in results]}
    failed = [r for r in results if r.status is Status.FAILED]
    if args.json and not (failed or (args.check and counts["stale"])):
        quiet.stdout().write(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    elif not args.json:
        print(f"slmpack build: {len(results)} packages, {summary['built']} built, {summary['reused']} reused "
              f"({counts['up-to-date']} up-to-date, {counts['from-cache']} from cache), {counts['stale']} stale, "
              f"{counts['failed']} failed in {summary['seconds']:.1f}s", file=quiet.stdout())
    if failed:  # with --json the error document carries the whole summary in its details
        worst = max((r.error or {}).get("exit_code", 3) for r in failed)
        raise BuildFailed(f"{len(failed)} of {len(results)} packages failed: "
                          + ", ".join(f"{r.label} ({(r.error or {}).get('error')})" for r in failed), worst,
                          details=summary)
    if args.check and counts["stale"]:
        raise BuildStale(f"{counts['stale']} of {len(results)} packages are stale: "
                         + ", ".join(r.label for r in results if r.status is Status.STALE), details=summary)
    if args.stamp is not None:
        args.stamp.parent.mkdir(parents=True, exist_ok=True)
        args.stamp.touch()
    return 0
