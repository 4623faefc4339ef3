"""One package build, the same function on every executor: export a unit into the cache.

``build_into_cache`` takes the key's lock, returns FROM_CACHE if a verified package is already
stored, else exports into a staging folder of the cache, verifies it and renames it into
``objects/<key>``. A failure (typed, or a converter bug) is returned, never raised, and leaves
nothing under ``objects/``: the staging folder is removed.
"""
from __future__ import annotations

import enum
import shutil
from pathlib import Path

from slmpack import quiet
from slmpack.build import cache
from slmpack.build.recipe import BuildUnit
from slmpack.errors import SlmpackError, ToolchainError


class Status(str, enum.Enum):
    UP_TO_DATE = "up-to-date"    # output already holds this key's package
    FROM_CACHE = "from-cache"    # copied out of the cache (built earlier, elsewhere or by another build)
    BUILT = "built"
    STALE = "stale"              # --check: would be built or copied
    FAILED = "failed"


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


def in_fresh_process(u: BuildUnit, key: str, cache_root: Path, log: Path) -> tuple[Status, dict | None]:
    """``build_into_cache`` in a worker process: native libraries read the quiet knobs at import."""
    quiet.quiet_env()
    return build_into_cache(u, key, cache_root, log)
