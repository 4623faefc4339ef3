"""LiteRT (TFLite) target options (frozen; validated on construction, naming the bad field)."""
from __future__ import annotations

import enum
from dataclasses import dataclass

from slmpack.errors import BadInputError

MAX_PREFILL_LENGTH = 8192


class TFLitePrecision(str, enum.Enum):
    """Weight encoding of the .tflite. ``fp32`` is exact; the rest use LiteRT's own recipes
    (litert-torch ``generative.quantize.quant_recipes``, applied by ai-edge-quantizer)."""

    FP32 = "fp32"
    FP16 = "fp16"                                  # fp16 weights, fp32 compute
    WEIGHT_ONLY_INT8 = "weight_only_int8"          # int8 per-channel weights, dequantized to fp32
    DYNAMIC_INT8 = "dynamic_int8"                  # int8 per-channel weights, int8 dynamic-range activations
    DYNAMIC_INT4_BLOCK32 = "dynamic_int4_block32"  # int4 weights, blocks of 32 along the input dim
    DYNAMIC_INT4_BLOCK128 = "dynamic_int4_block128"


def _bad(field: str, why: str) -> BadInputError:
    return BadInputError(f"invalid option {field}: {why}", "E_CONFIG", details={"field": field})


@dataclass(frozen=True)
class TFLiteOptions:
    prefill_lengths: tuple[int, ...] = (8, 32, 128)   # one `prefill_<n>` signature each (capped by max_prompt)
    precision: TFLitePrecision = TFLitePrecision.FP32
    composites: bool = True       # odml.rms_norm / odml.scaled_dot_product_attention composites
    litertlm: bool = True         # also write model.litertlm (LiteRT-LM bundle) when a tokenizer.json exists
    allow_flex: bool = False      # Flex (TensorFlow) ops are an error unless allowed

    def __post_init__(self):
        lengths = self.prefill_lengths
        if isinstance(lengths, (str, bytes)) or not isinstance(lengths, (tuple, list)) or not lengths:
            raise _bad("prefill_lengths", f"must be a non-empty tuple of ints, got {lengths!r}")
        if any(isinstance(n, bool) or not isinstance(n, int) for n in lengths):
            raise _bad("prefill_lengths", f"must contain ints only, got {lengths!r}")
        if any(not 1 <= n <= MAX_PREFILL_LENGTH for n in lengths):
            raise _bad("prefill_lengths", f"each length must be in 1..{MAX_PREFILL_LENGTH}, got {lengths!r}")
        if len(set(lengths)) != len(lengths):
            raise _bad("prefill_lengths", f"lengths must be distinct, got {lengths!r}")
        object.__setattr__(self, "prefill_lengths", tuple(sorted(lengths)))
        try:
            object.__setattr__(self, "precision", TFLitePrecision(self.precision))
        except ValueError:
            allowed = ", ".join(p.value for p in TFLitePrecision)
            raise _bad("precision", f"{self.precision!r} is not one of: {allowed}") from None
        for name in ("composites", "litertlm", "allow_flex"):
            if not isinstance(getattr(self, name), bool):
                raise _bad(name, f"must be a bool, got {getattr(self, name)!r}")

    def signature_lengths(self, max_prompt: int) -> tuple[int, ...]:
        """Prefill lengths actually exported: those below ``max_prompt``, plus ``max_prompt`` itself
        when any requested length reaches it (the largest signature never exceeds max_prompt)."""
        kept = [n for n in self.prefill_lengths if n < max_prompt]
        if len(kept) < len(self.prefill_lengths):
            kept.append(max_prompt)
        return tuple(kept)
