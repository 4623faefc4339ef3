"""What precision a tensor gets: weight and activation schemes (frozen, validated on creation).

These objects say *what* a tensor becomes, never *how* a backend packs it. Shape-dependent checks
(a group size must divide the tensor's input dimension) need the model and live in
:meth:`slmpack.calibration.plan.QuantPlan.validate_against`.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from slmpack.errors import BadInputError

SUPPORTED_WEIGHT_BITS = (4, 8)


class TextFormat(str, Enum):
    """How calibration text is read (``calibration/datasets.py``)."""

    TEXT = "text"
    JSONL = "jsonl"
    DIRECTORY = "directory"

    def __str__(self) -> str:
        return self.value


class Algorithm(str, Enum):
    """How integer weights are chosen. Embeddings always use RTN (they have no input activations)."""

    RTN = "rtn"    # round to nearest
    GPTQ = "gptq"  # Frantar et al. 2022, arXiv:2210.17323
    AWQ = "awq"    # Lin et al. 2023, arXiv:2306.00978 (scale search, then RTN)


class ActivationMode(str, Enum):
    NONE = "none"                  # activations stay float
    DYNAMIC_INT8 = "dynamic_int8"  # per-token int8, range computed at run time (no calibration)
    STATIC_INT8 = "static_int8"    # per-tensor int8, range fixed from calibration data


class Observer(str, Enum):
    """How a static activation range is chosen from calibration data (see observers.py)."""

    MINMAX = "minmax"
    PERCENTILE = "percentile"
    MSE = "mse"


def _bad(cls: str, field: str, message: str) -> BadInputError:
    return BadInputError(f"{cls}.{field}: {message}", "E_QUANT_SCHEME", details={"field": field})


def _coerce_enum(obj, field: str, enum_cls, cls_name: str) -> None:
    value = getattr(obj, field)
    if isinstance(value, enum_cls):
        return
    try:
        object.__setattr__(obj, field, enum_cls(value))
    except ValueError:
        allowed = ", ".join(m.value for m in enum_cls)
        raise _bad(cls_name, field, f"{value!r} is not one of: {allowed}") from None


@dataclass(frozen=True)
class WeightScheme:
    """Integer weight format.

    ``group_size=None`` means per-output-channel (one scale per row); otherwise each row is cut into
    contiguous groups of ``group_size`` input columns, each with its own scale (and zero point).
    """

    bits: int
    group_size: int | None = None
    symmetric: bool = True
    algorithm: Algorithm = Algorithm.RTN

    def __post_init__(self) -> None:
        if isinstance(self.bits, bool) or self.bits not in SUPPORTED_WEIGHT_BITS:
            raise _bad("WeightScheme", "bits", f"must be 4 or 8, got {self.bits!r}")
        gs = self.group_size
        if gs is not None and (isinstance(gs, bool) or not isinstance(gs, int) or gs < 2
                               or gs & (gs - 1)):
            raise _bad("WeightScheme", "group_size",
                       f"must be None (per-channel) or a power of two >= 2, got {gs!r}")
        if not isinstance(self.symmetric, bool):
            raise _bad("WeightScheme", "symmetric", f"must be a bool, got {self.symmetric!r}")
        _coerce_enum(self, "algorithm", Algorithm, "WeightScheme")

    @property
    def label(self) -> str:
        """Short stable name, e.g. ``int4_g32_sym_gptq`` or ``int8_pc_asym_rtn``."""
        group = "pc" if self.group_size is None else f"g{self.group_size}"
        sym = "sym" if self.symmetric else "asym"
        return f"int{self.bits}_{group}_{sym}_{self.algorithm.value}"

    def to_dict(self) -> dict:
        return {"bits": self.bits, "group_size": self.group_size, "symmetric": self.symmetric,
                "algorithm": self.algorithm.value}


@dataclass(frozen=True)
class ActivationScheme:
    """Input-activation format of a linear layer.

    ``observer``/``percentile``/``symmetric`` only matter for STATIC_INT8. ``smoothquant_alpha``
    (Xiao et al. 2022, arXiv:2211.10438) migrates activation outliers into the weights before
    quantization, folding the inverse scales into the preceding RMSNorm; it needs int8 activations.
    """

    mode: ActivationMode = ActivationMode.NONE
    observer: Observer = Observer.MINMAX
    percentile: float = 99.99
    symmetric: bool = True
    smoothquant_alpha: float | None = None

    def __post_init__(self) -> None:
        _coerce_enum(self, "mode", ActivationMode, "ActivationScheme")
        _coerce_enum(self, "observer", Observer, "ActivationScheme")
        p = self.percentile
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 50.0 < p <= 100.0:
            raise _bad("ActivationScheme", "percentile", f"must be in (50, 100], got {p!r}")
        if not isinstance(self.symmetric, bool):
            raise _bad("ActivationScheme", "symmetric", f"must be a bool, got {self.symmetric!r}")
        a = self.smoothquant_alpha
        if a is not None:
            if isinstance(a, bool) or not isinstance(a, (int, float)) or not 0.0 <= a <= 1.0:
                raise _bad("ActivationScheme", "smoothquant_alpha", f"must be in [0, 1], got {a!r}")
            if self.mode is ActivationMode.NONE:
                raise _bad("ActivationScheme", "smoothquant_alpha",
                           "SmoothQuant needs int8 activations (mode is 'none')")

    @property
    def label(self) -> str:
        if self.mode is ActivationMode.STATIC_INT8:
            return f"{self.mode.value}_{self.observer.value}"
        return self.mode.value

    def to_dict(self) -> dict:
        return {"mode": self.mode.value, "observer": self.observer.value,
                "percentile": float(self.percentile), "symmetric": self.symmetric,
                "smoothquant_alpha": None if self.smoothquant_alpha is None
                else float(self.smoothquant_alpha)}


FLOAT_ACTIVATIONS = ActivationScheme()
