"""Declared support of the ExecuTorch target, checked before any slow work.

What XNNPACK (executorch 1.5.1) runs, and therefore what this target accepts:
  * fp32 and fp16 programs; bf16 is refused: XnnpackPartitioner leaves bf16 nodes to the
    portable kernels unless ``enable_bf16`` is set, and that path only covers fully-connected
    layers on recent XNNPACK revisions (``partition/config/xnnpack_config.py``), so a bf16 program
    would run almost entirely on slow reference kernels.
  * QuantPlans (see ``quantize.py``): int8 weight-only per-channel (XNNPACK f32-qc8w), 8da8w and
    8da4w (int8 per-channel / int4 group-wise weights + dynamic int8 per-token activations), on
    fp32 programs. int4 weight-only is refused (no fp32-activation int4 GEMM in XNNPACK here).
"""
from __future__ import annotations

import importlib.util

from slmpack.exporter.spec import ModelSpec
from slmpack.targets.base import Unsupported
from slmpack.targets.executorch.options import EtPrecision, ExecuTorchOptions

SUPPORTED_PRECISIONS = (EtPrecision.FP32, EtPrecision.FP16)


def unsupported_features(spec: ModelSpec, options: ExecuTorchOptions, plan=None) -> list[Unsupported]:
    out: list[Unsupported] = []
    if importlib.util.find_spec("executorch") is None:
        out.append(Unsupported("runtime", "the executorch package is not installed"))
        return out
    if options.precision not in SUPPORTED_PRECISIONS:
        out.append(Unsupported(f"precision {options.precision.value}",
                               "XNNPACK in executorch 1.5.1 has no bf16 kernels beyond opt-in fully-connected; "
                               f"choose one of {', '.join(p.value for p in SUPPORTED_PRECISIONS)}"))
    if plan is not None:
        from slmpack.targets.executorch.quantize import plan_problems

        out.extend(plan_problems(plan, spec, options))
    return out
