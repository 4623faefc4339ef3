"""``QuantConfig``: what ``slmpack export --quant ...`` asks for (frozen, validated on creation).

Only *what* is wanted lives here (recipe, calibration data, algorithm override, budget); the
recipe objects, algorithms and the QuantPlan live in ``calibration/``. Importing this module is
cheap (no torch): ``slmpack.config`` embeds it in ``ExportConfig``.

Budgets (automatic mixed precision, ``calibration/mixed_precision.py``): at most one of
``max_ppl_increase_pct`` (perplexity increase over fp32 on calibration windows, percent) and
``max_size_bytes`` (estimated weight + graph-constant bytes of the artifact).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from slmpack.calibration.schemes import Algorithm, TextFormat
from slmpack.errors import BadInputError


PRESET_NAMES = ("int8", "int4", "8da4w", "8da8w", "w8a8")
FROM_GGUF = "from-gguf"   # a .gguf model's own Q8_0 / Q4_0 blocks (exporter/gguf/plan.py); no calibration
ALGORITHMS = tuple(a.value for a in Algorithm)
CALIB_FORMATS = tuple(f.value for f in TextFormat)
_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000 ** 2, "gb": 1000 ** 3,
          "kib": 1024, "mib": 1024 ** 2, "gib": 1024 ** 3}


def _bad(field_name: str, why: str) -> BadInputError:
    return BadInputError(f"invalid option {field_name}: {why}", "E_CONFIG", details={"field": field_name})


def parse_percent(text: str | float | int) -> float:
    """``"2%"``, ``"2"``, ``2.0`` -> 2.0 (percent)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*%?\s*", str(text))
    if not m:
        raise _bad("max_ppl_increase", f"expected a percentage like 2% or 0.5, got {text!r}")
    return float(m.group(1))


def parse_size(text: str | int, field_name: str = "max_size") -> int:
    """``"8MB"`` (10^6), ``"8MiB"`` (2^20), ``"500kB"``, ``"1234"`` (bytes) -> bytes."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _UNITS:
        raise _bad(field_name, f"expected a size like 8MB, 6.5MiB or 1200000, got {text!r}")
    return int(round(float(m.group(1)) * _UNITS[m.group(2).lower()]))


@dataclass(frozen=True)
class QuantConfig:
    """Quantization of one export. ``recipe=None`` and no budget: a float export (the default)."""

    recipe: str | None = None            # preset name (int8, int4, 8da4w, 8da8w, w8a8) or a .toml/.json path
    calib_data: Path | None = None       # file, directory or .jsonl; None: bundled calibration.txt
    calib_format: TextFormat | None = None   # None: from calib_data
    calib_text_field: str = "text"       # jsonl field holding the document
    calib_windows: int = 32              # windows drawn (seeded) from the calibration text
    calib_window_tokens: int = 256       # tokens per window (<= the export's max context)
    calib_seed: int = 0
    algorithm: Algorithm | None = None   # overrides every linear rule's algorithm
    max_ppl_increase_pct: float | None = None   # mixed-precision budget (percent over fp32)
    max_size_bytes: int | None = None            # mixed-precision budget (artifact bytes, estimated)
    plan_from: Path | None = None        # reuse a calibrated plan (a package or a quant_plan.json folder)

    def __post_init__(self):
        if self.plan_from is not None:
            object.__setattr__(self, "plan_from", Path(self.plan_from))
            given = [f for f, v in (("quant", self.recipe), ("algorithm", self.algorithm),
                                    ("max_ppl_increase", self.max_ppl_increase_pct),
                                    ("max_size", self.max_size_bytes), ("calib_data", self.calib_data))
                     if v is not None]
            if given:
                raise _bad("quant_plan", f"a reused plan already fixes every decision and number; drop "
                                         f"--{given[0].replace('_', '-')}")
        if self.recipe == FROM_GGUF:
            given = [f for f, v in (("algorithm", self.algorithm), ("max_ppl_increase", self.max_ppl_increase_pct),
                                    ("max_size", self.max_size_bytes), ("calib_data", self.calib_data)) if v is not None]
            if given:
                raise _bad("quant", f"from-gguf keeps the file's integers: drop --{given[0].replace('_', '-')}")
        if self.recipe is not None and (not isinstance(self.recipe, str) or not self.recipe):
            raise _bad("quant", f"must be a preset ({', '.join(PRESET_NAMES)}) or a recipe file, got {self.recipe!r}")
        if self.recipe is not None and self.recipe not in (*PRESET_NAMES, FROM_GGUF) \
                and not self.recipe.endswith((".toml", ".json")):
            raise _bad("quant", f"{self.recipe!r} is neither a preset ({', '.join(PRESET_NAMES)}) nor a "
                                ".toml/.json recipe file")
        if self.calib_data is not None:
            object.__setattr__(self, "calib_data", Path(self.calib_data))
        if self.calib_format is not None:
            if self.calib_format not in CALIB_FORMATS:
                raise _bad("calib_format", f"must be one of {', '.join(CALIB_FORMATS)}, got {self.calib_format!r}")
            object.__setattr__(self, "calib_format", TextFormat(self.calib_format))
        for name, lo in (("calib_windows", 1), ("calib_window_tokens", 2), ("calib_seed", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise _bad(name, f"must be an integer >= {lo}, got {v!r}")
        if self.algorithm is not None:
            if self.algorithm not in ALGORITHMS:
                raise _bad("algorithm", f"must be one of {', '.join(ALGORITHMS)}, got {self.algorithm!r}")
            object.__setattr__(self, "algorithm", Algorithm(self.algorithm))
        if self.max_ppl_increase_pct is not None:
            object.__setattr__(self, "max_ppl_increase_pct", parse_percent(self.max_ppl_increase_pct))
            if not 0.0 < self.max_ppl_increase_pct <= 1000.0:
                raise _bad("max_ppl_increase", f"must be in (0, 1000] percent, got {self.max_ppl_increase_pct}")
        if self.max_size_bytes is not None:
            object.__setattr__(self, "max_size_bytes", parse_size(self.max_size_bytes))
            if self.max_size_bytes <= 0:
                raise _bad("max_size", "must be > 0 bytes")
        if self.max_ppl_increase_pct is not None and self.max_size_bytes is not None:
            raise _bad("max_size", "give one budget: --max-ppl-increase or --max-size, not both")

    @property
    def enabled(self) -> bool:
        return self.recipe is not None or self.has_budget or self.plan_from is not None

    @property
    def from_gguf(self) -> bool:
        return self.recipe == FROM_GGUF

    @property
    def has_budget(self) -> bool:
        return self.max_ppl_increase_pct is not None or self.max_size_bytes is not None

    @property
    def base_recipe(self) -> str:
        """The recipe to start from (a budget alone starts from int4)."""
        return self.recipe or "int4"

    def resolved_format(self) -> TextFormat:
        if self.calib_format is not None:
            return self.calib_format
        if self.calib_data is None:
            return TextFormat.TEXT
        if self.calib_data.is_dir():
            return TextFormat.DIRECTORY
        return TextFormat.JSONL if self.calib_data.suffix == ".jsonl" else TextFormat.TEXT

    def to_json(self) -> dict:
        return {"recipe": self.recipe, "calib_data": None if self.calib_data is None else self.calib_data.name,
                "calib_format": self.resolved_format().value, "calib_text_field": self.calib_text_field,
                "calib_windows": self.calib_windows, "calib_window_tokens": self.calib_window_tokens,
                "calib_seed": self.calib_seed,
                "algorithm": None if self.algorithm is None else self.algorithm.value,
                "max_ppl_increase_pct": self.max_ppl_increase_pct, "max_size_bytes": self.max_size_bytes,
                "plan_from": None if self.plan_from is None else self.plan_from.name}
