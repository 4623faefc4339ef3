"""`slmpack build [RECIPE] [--jobs N] [--check] [--json]`: every package of a recipe, incrementally.

For each package (recipe entry x target): compute its key (slmpack.build.inputs); if the output
already holds that key's package, untouched, it is up to date; else if the cache holds a package
that verifies, copy it out; else export it (``slmpack.api.export``, validated) into the cache under
the key's lock and publish it. Packages build in parallel with ``--jobs N`` (one process each), or as
Ray tasks on a cluster sharing the cache (``--executor ray [--address ADDR]``).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from slmpack import quiet
from slmpack.build import cache
from slmpack.build.executor import EXECUTORS, Outcome, Task, make_executor, run_tasks
from slmpack.build.inputs import FileHasher, unit_key
from slmpack.build.recipe import BuildUnit, Recipe, load_recipe
from slmpack.build.resources import package_bits
from slmpack.build.unit import Status
from slmpack.errors import BadInputError, BuildFailed, BuildStale, SlmpackError


@dataclass(frozen=True)
class UnitResult:
    label: str
    path: str
    key: str
    status: Status
    seconds: float
    error: dict | None = None
    attempts: int = 0  # builds tried (a failed Ray task is tried twice); 0: nothing to build

    def to_json(self) -> dict:
        return {"package": self.label, "path": self.path, "key": self.key, "status": self.status.value,
                "seconds": round(self.seconds, 2), "attempts": self.attempts,
                **({"error": self.error} if self.error else {})}


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
    p.add_argument("--executor", choices=EXECUTORS, default="local",
                   help="where packages build: this machine (default) or a Ray cluster sharing the cache folder "
                   "(pip install 'slmpack[ray]')")
    p.add_argument("--address", default=None,
                   help="with --executor ray: the cluster (HOST:PORT of its head, 'auto', or ray://HOST:10001); "
                   "default: Ray's own (RAY_ADDRESS, a running local cluster, else a new one on this machine)")
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
        fit_check(model, d, u.entry.context, package_bits(u))


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
              on_result=lambda r: None, executor: str = "local", address: str | None = None) -> list[UnitResult]:
    t0 = time.perf_counter()
    rows = plan(recipe, layout, only)
    results: dict[str, UnitResult] = {}

    def done(u: BuildUnit, key: str, status: Status, seconds: float, error: dict | None = None,
             attempts: int = 0) -> None:
        r = UnitResult(u.label, str(layout.package(u)), key, status, seconds, error, attempts)
        results[u.label] = r
        on_result(r)

    store = cache.Store(layout.cache)
    tasks = []
    for u, key, fresh in rows:
        if fresh:
            done(u, key, Status.UP_TO_DATE, time.perf_counter() - t0)
        elif check:
            done(u, key, Status.STALE, time.perf_counter() - t0)
        else:
            try:
                _gate_devices(u)
            except SlmpackError as e:
                done(u, key, Status.FAILED, 0.0, e.to_json())
                continue
            with store.lock(key):
                cached = store.verified(key) is not None
            if cached:  # no task for what the cache holds (the task would find it too)
                _finish(Task(u, key, layout.log(u)), Outcome(Status.FROM_CACHE, None, 0, 0.0), layout, done)
            else:
                tasks.append(Task(u, key, layout.log(u)))
    if tasks:
        ex = make_executor(executor, jobs, address, layout.cache)
        try:
            run_tasks(ex, tasks, layout.cache, lambda t, o: _finish(t, o, layout, done))
        finally:
            ex.close()
    return [results[u.label] for u, _, _ in rows]


def _finish(t: Task, o: Outcome, layout: Layout, done) -> None:
    """Publish a task's package from the cache to its output (shared by every executor)."""
    u, key = t.unit, t.key
    if o.status is Status.FAILED:
        return done(u, key, o.status, o.seconds, o.error, o.attempts)
    t0 = time.perf_counter()
    store = cache.Store(layout.cache)
    with cache.file_lock(layout.state(u).with_suffix(".lock")), store.lock(key):
        obj = store.verified(key)
        if obj is None:  # removed or corrupted between build and publish: never publish it
            return done(u, key, Status.FAILED, o.seconds, {"error": "E_CACHE_CORRUPT",
                        "message": f"cached package {key[:12]} does not verify"}, o.attempts)
        cache.publish(obj, layout.package(u), key, layout.state(u))
    done(u, key, o.status, o.seconds + time.perf_counter() - t0, None, o.attempts)


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
        raise BadInputError("--jobs must be >= 1", "E_CONFIG")
    if args.executor == "ray":
        if args.jobs != 1:
            raise BadInputError("--jobs is for the local executor (Ray runs as many packages as the cluster holds)",
                                "E_CONFIG")
        from slmpack.build.ray_executor import require_ray

        require_ray()
    elif args.address is not None:
        raise BadInputError("--address needs --executor ray", "E_CONFIG")
    if args.list:
        from slmpack.build.inputs import input_files

        units = [{"package": u.label, "path": str(layout.package(u)),
                  "inputs": [str(f) for f in [recipe.path, *input_files(u)]]} for u in recipe.units(tuple(args.only))]
        quiet.stdout().write(json.dumps({"packages": units}, indent=2) + "\n")
        return 0
    t0 = time.perf_counter()
    results = run_build(recipe, layout, args.jobs, tuple(args.only), args.check, report, args.executor, args.address)
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
