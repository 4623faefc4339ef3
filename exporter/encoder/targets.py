"""Which targets export encoders, and how: one explicit table (lowering, structural check, declared
tolerance, batch bound). Each entry's code lives in targets/<t>/encoder.py."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from slmpack.errors import UnsupportedError
from slmpack.runtime.tolerance import COREML_FP32
from slmpack.targets.base import TargetName, Tolerance


@dataclass(frozen=True)
class EncoderTarget:
    name: TargetName
    module: str                    # targets/<t>/encoder.py: lower_encoder(programs, spec, out_dir), check_encoder
    tolerance: Tolerance           # vs the reference, on embeddings / hidden states / logits
    max_batch: int = 1024          # upper bound of the dynamic batch (memory-planned targets: small)
    needs_program: bool = True     # False: the converter traces the module itself (litert-torch)
    # quantized packages, vs the plan's fake-quant reference: weight-only, dynamic int8 activations
    plan_tolerance: Tolerance = Tolerance(atol=1e-4, rtol=1e-4)
    plan_act_tolerance: Tolerance | None = None   # None: the target runs no dynamic activations

    def lower(self) -> Callable:
        return importlib.import_module(self.module).lower_encoder

    def options(self):
        """The target's options for encoders (the encoder flow has no per-target CLI options yet)."""
        return importlib.import_module(self.module).ENCODER_OPTIONS

    def tolerance_for(self, quant) -> Tolerance:
        if quant is None:
            return self.tolerance
        return self.plan_act_tolerance if quant.has_activations else self.plan_tolerance

    def check(self) -> Callable:
        return importlib.import_module(self.module).check_encoder


ENCODER_TARGETS = {
    # dynamic int8 activations: MatMulNBits accuracy_level 4 vs the per-block fake-quant reference
    TargetName.ONNX: EncoderTarget(TargetName.ONNX, "slmpack.targets.onnx.encoder", Tolerance(atol=1e-4, rtol=1e-4),
                                   plan_act_tolerance=Tolerance(atol=2e-3, rtol=2e-2)),
    # static batch-1 methods per length (targets/executorch/encoder.py says why); the runtime loops rows
    TargetName.EXECUTORCH: EncoderTarget(TargetName.EXECUTORCH, "slmpack.targets.executorch.encoder",
                                         Tolerance(atol=1e-4, rtol=1e-4), max_batch=32, needs_program=False,
                                         # XNNPACK qd8 vs torchao's reference rounding (one activation step):
                                         # measured max |Δ| 1.2e-2 on all-MiniLM-L6-v2 8da4w (2026-12-02)
                                         plan_act_tolerance=Tolerance(atol=2e-2, rtol=2e-2)),
    TargetName.TFLITE: EncoderTarget(TargetName.TFLITE, "slmpack.targets.tflite.encoder",
                                     Tolerance(atol=1e-4, rtol=1e-4), max_batch=32, needs_program=False),
    # flexible batch / sequence (RangeDim), fp32 compute: targets/coreml/encoder.py says why fp32's bound
    TargetName.COREML: EncoderTarget(TargetName.COREML, "slmpack.targets.coreml.encoder", COREML_FP32,
                                     max_batch=64),
}


def encoder_target(name: str) -> EncoderTarget:
    key = TargetName(name)
    if key not in ENCODER_TARGETS:
        raise UnsupportedError(f"target {key.value} cannot export encoders yet (encoders: "
                               f"{', '.join(t.value for t in ENCODER_TARGETS)})", "E_TARGET_UNSUPPORTED")
    return ENCODER_TARGETS[key]
