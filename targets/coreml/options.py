"""Core ML target options (frozen; value checks on construction, combination checks in ``ops.py``).

Values are validated here (``BadInputError``, code ``E_CONFIG``, naming the field). Combinations
Core ML cannot run (state KV cache or per-block int4 below iOS 18, ...) are valid *options* but
unsupported *exports*: ``CoreMLTarget.supports`` refuses them before any slow work.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

from slmpack.errors import BadInputError


class DeploymentTarget(str, enum.Enum):
    IOS17 = "ios17"
    IOS18 = "ios18"
    MACOS14 = "macos14"
    MACOS15 = "macos15"

    @property
    def ct_name(self) -> str:           # coremltools.target member: iOS17, macOS15, ...
        os_name, version = self.runtime_label.split()
        return os_name + version

    @property
    def level(self) -> int:             # Core ML specification version (iOS17 = 8, iOS18 = 9)
        return {"ios17": 8, "ios18": 9, "macos14": 8, "macos15": 9}[self.value]

    @property
    def runtime_label(self) -> str:     # manifest "runtime.min_version": "iOS 17", "macOS 15", ...
        os_name = "iOS" if self.value.startswith("ios") else "macOS"
        return f"{os_name} {self.value[len(os_name):]}"

    @property
    def has_states(self) -> bool:       # ct.StateType / read_state / write_state
        return self.level >= 9


class ComputePrecision(str, enum.Enum):
    FP16 = "fp16"
    FP32 = "fp32"


class ComputeUnits(str, enum.Enum):
    ALL = "all"
    CPU_ONLY = "cpu_only"
    CPU_AND_GPU = "cpu_and_gpu"
    CPU_AND_NE = "cpu_and_ne"

    @property
    def ct_name(self) -> str:           # coremltools.ComputeUnit member
        return self.value.upper()


class KVCache(str, enum.Enum):
    AUTO = "auto"      # state on iOS 18 / macOS 15 and later, inputs/outputs before
    STATE = "state"    # ct.StateType, updated in place (fp16: Core ML states are fp16 only)
    IO = "io"          # fixed-size caches as model inputs and updated copies as outputs


def _coerce(obj, name: str, enum_cls) -> None:
    value = getattr(obj, name)
    if isinstance(value, enum_cls):
        return
    try:
        object.__setattr__(obj, name, enum_cls(str(value).lower()))
    except ValueError:
        allowed = ", ".join(m.value for m in enum_cls)
        raise BadInputError(f"invalid option coreml {name}: {value!r} is not one of: {allowed}", "E_CONFIG",
                            details={"field": name}) from None


@dataclass(frozen=True)
class CoreMLOptions:
    deployment_target: DeploymentTarget = DeploymentTarget.IOS18
    compute_precision: ComputePrecision = ComputePrecision.FP16
    compute_units: ComputeUnits = ComputeUnits.ALL
    kv_cache: KVCache = KVCache.AUTO
    palettize: bool = False            # encode QuantPlan weights as per-block LUTs (iOS 18) instead of scales

    def __post_init__(self):
        _coerce(self, "deployment_target", DeploymentTarget)
        _coerce(self, "compute_precision", ComputePrecision)
        _coerce(self, "compute_units", ComputeUnits)
        _coerce(self, "kv_cache", KVCache)
        if not isinstance(self.palettize, bool):
            raise BadInputError(f"invalid option coreml palettize: must be a bool, got {self.palettize!r}",
                                "E_CONFIG", details={"field": "palettize"})

    @property
    def uses_state(self) -> bool:
        if self.kv_cache is KVCache.AUTO:
            return self.deployment_target.has_states
        return self.kv_cache is KVCache.STATE

    def to_json(self) -> dict:
        return {"deployment_target": self.deployment_target.value, "compute_precision": self.compute_precision.value,
                "compute_units": self.compute_units.value, "kv_cache": self.kv_cache.value,
                "palettize": self.palettize}
