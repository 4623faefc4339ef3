"""Typed, frozen configuration, grouped by the component that consumes it.

Each component receives only its own sub-config. Validation happens in ``__post_init__`` and
names the offending field (raised as ``BadInputError`` with code ``E_CONFIG``).
"""
from __future__ import annotations

import enum
from pathlib import Path
from dataclasses import dataclass, field

from slmpack.errors import BadInputError
from slmpack.quantize_config import QuantConfig


class Precision(str, enum.Enum):
    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"


class AdapterMode(str, enum.Enum):
    MERGED = "merged"        # the adapter is merged into the base weights (every target)
    SEPARATE = "separate"    # base + swappable adapter files (targets whose runtime switches adapters)


def _bad(field_name: str, why: str) -> BadInputError:
    return BadInputError(f"invalid option {field_name}: {why}", "E_CONFIG", details={"field": field_name})


@dataclass(frozen=True)
class TraceConfig:
    """How the reference module is traced (shared by every target)."""

    max_context: int | None = None   # None: min(4096, the model's max_position_embeddings)
    max_prompt: int = 128            # longest prefill chunk (longer prompts prefill in chunks); <= max_context

    DEFAULT_CONTEXT = 4096

    def resolved(self, model_max_positions: int) -> "TraceConfig":
        ctx = self.max_context or min(self.DEFAULT_CONTEXT, model_max_positions)
        return TraceConfig(max_context=ctx, max_prompt=min(self.max_prompt, ctx))

    def __post_init__(self):
        if self.max_context is None:
            if self.max_prompt < 1:
                raise _bad("max_prompt", f"must be >= 1, got {self.max_prompt}")
            return
        if not 2 <= self.max_context <= 131072:
            raise _bad("max_context", f"must be in 2..131072, got {self.max_context}")
        if not 1 <= self.max_prompt <= self.max_context:
            raise _bad("max_prompt", f"must be in 1..max_context ({self.max_context}), got {self.max_prompt}")


@dataclass(frozen=True)
class ValidationConfig:
    heldout_tokens: int = 512      # ladder step (c): at least this many held-out tokens
    greedy_tokens: int = 32        # ladder step (d)
    test_prompt_tokens: int = 16   # test vectors: prompt length
    test_decode_tokens: int = 8    # test vectors: single-token decode steps
    max_ppl_loss: float = 10.0     # accuracy gate: a plan's perplexity loss vs fp32, in percent

    def __post_init__(self):
        if self.heldout_tokens < 1:
            raise _bad("heldout_tokens", "must be >= 1")
        if self.greedy_tokens < 1:
            raise _bad("greedy_tokens", "must be >= 1")
        if not (isinstance(self.max_ppl_loss, (int, float)) and 0 <= self.max_ppl_loss < float("inf")):
            raise _bad("max_ppl_loss", f"must be a finite percentage >= 0, got {self.max_ppl_loss!r}")


@dataclass(frozen=True)
class ExportConfig:
    """Everything `slmpack export` decides, grouped by consumer."""

    trace: TraceConfig = field(default_factory=TraceConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    precision: Precision = Precision.FP32
    quant: QuantConfig = field(default_factory=QuantConfig)   # default: float export (no plan)
    validate: bool = True
    allow_pickle: bool = False
    force: bool = False
    follow_symlinks: bool = False  # follow symlinks in the model dir (still confined to it)
    keep_failed: Path | None = None  # a package that fails validation is moved here (else removed)
    adapter: Path | None = None      # a PEFT LoRA adapter directory (--adapter)
    adapter_mode: AdapterMode = AdapterMode.MERGED

    def __post_init__(self):
        if not isinstance(self.adapter_mode, AdapterMode):
            try:
                object.__setattr__(self, "adapter_mode", AdapterMode(self.adapter_mode))
            except ValueError:
                raise _bad("adapter_mode", f"must be one of {[m.value for m in AdapterMode]}, "
                                           f"got {self.adapter_mode!r}") from None
        if self.adapter_mode is AdapterMode.SEPARATE and self.adapter is None:
            raise _bad("adapter_mode", "separate needs --adapter DIR")
        if self.adapter_mode is AdapterMode.SEPARATE and self.quant.enabled:
            raise _bad("adapter_mode", "separate adapters are exported in float; quantize with --adapter-mode merged")

    @property
    def separate_adapter(self) -> bool:
        return self.adapter is not None and self.adapter_mode is AdapterMode.SEPARATE
