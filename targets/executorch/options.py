"""ExecuTorch target options (frozen; validated on construction)."""
from __future__ import annotations

import enum
from dataclasses import dataclass

import torch

from slmpack.errors import BadInputError


class EtPrecision(str, enum.Enum):
    """Float type of the weights and activations inside model.pte (quantized weights aside)."""

    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"

    @property
    def torch_dtype(self) -> torch.dtype:
        return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[self.value]


class Sdpa(str, enum.Enum):
    """How attention and the cache update are expressed in the program."""

    CUSTOM = "custom"          # llama::update_cache + llama::custom_sdpa (ExecuTorch LLM custom ops)
    DECOMPOSED = "decomposed"  # index_copy_ + matmul/softmax over the whole cache (portable + XNNPACK)


@dataclass(frozen=True)
class ExecuTorchOptions:
    precision: EtPrecision = EtPrecision.FP32
    sdpa: Sdpa = Sdpa.CUSTOM
    bundled_program: bool = False    # also write model.bpte (BundledProgram with reference test cases)

    def __post_init__(self):
        for name, enum_cls in (("precision", EtPrecision), ("sdpa", Sdpa)):
            value = getattr(self, name)
            if not isinstance(value, enum_cls):
                try:
                    object.__setattr__(self, name, enum_cls(value))
                except ValueError:
                    allowed = ", ".join(m.value for m in enum_cls)
                    raise BadInputError(f"invalid option {name}: {value!r} is not one of {allowed}", "E_CONFIG",
                                        details={"field": name}) from None
        if not isinstance(self.bundled_program, bool):
            raise BadInputError(f"invalid option bundled_program: must be a bool, got {self.bundled_program!r}",
                                "E_CONFIG", details={"field": "bundled_program"})
