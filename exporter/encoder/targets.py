"""Which targets export encoders, and how: one explicit table (lowering, structural check, declared
tolerance, batch bound). Each entry's code lives in targets/<t>/encoder.py."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from slmpack.errors import UnsupportedError
from slmpack.runtime.tolerance import ENCODER_FP32, ENCODER_PLAN, ENCODER_PLAN_ACT
from slmpack.targets.base import TargetName, Tolerance


@dataclass(frozen=True)
class EncoderTarget:
    name: TargetName
    module: str                    # targets/<t>/encoder.py: lower_encoder(programs, spec, out_dir), check_encoder
    tolerance: Tolerance           # vs the reference, on embeddings / hidden states / logits
    max_batch: int = 1024          # upper bound of the dynamic batch (memory-planned targets: small)
    needs_program: bool = True     # False: the converter traces the module itself (litert-torch)

    def lower(self) -> Callable:
        return importlib.import_module(self.module).lower_encoder

    def options(self):
        """The target's options for encoders (the encoder flow has no per-target CLI options yet)."""
        return importlib.import_module(self.module).ENCODER_OPTIONS

    def tolerance_for(self, quant) -> Tolerance:
        """fp32, or the quantized rule of runtime/tolerance.py (the one the device re-derives)."""
        if quant is None:
            return self.tolerance
        table = ENCODER_PLAN_ACT if quant.has_activations else ENCODER_PLAN
        return table[self.name]

    def check(self) -> Callable:
        return importlib.import_module(self.module).check_encoder


ENCODER_TARGETS = {
    TargetName.ONNX: EncoderTarget(TargetName.ONNX, "slmpack.targets.onnx.encoder", ENCODER_FP32[TargetName.ONNX]),
    # static batch-1 methods per length (targets/executorch/encoder.py says why); the runtime loops rows
    TargetName.EXECUTORCH: EncoderTarget(TargetName.EXECUTORCH, "slmpack.targets.executorch.encoder",
                                         ENCODER_FP32[TargetName.EXECUTORCH], max_batch=32, needs_program=False),
    TargetName.TFLITE: EncoderTarget(TargetName.TFLITE, "slmpack.targets.tflite.encoder",
                                     ENCODER_FP32[TargetName.TFLITE], max_batch=32, needs_program=False),
    # flexible batch / sequence (RangeDim), fp32 compute: targets/coreml/encoder.py says why fp32's bound
    TargetName.COREML: EncoderTarget(TargetName.COREML, "slmpack.targets.coreml.encoder",
                                     ENCODER_FP32[TargetName.COREML],
                                     max_batch=64),
}


def encoder_target(name: str) -> EncoderTarget:
    key = TargetName(name)
    if key not in ENCODER_TARGETS:
        raise UnsupportedError(f"target {key.value} cannot export encoders yet (encoders: "
                               f"{', '.join(t.value for t in ENCODER_TARGETS)})", "E_TARGET_UNSUPPORTED")
    return ENCODER_TARGETS[key]
