"""Silence third-party import chatter (torchao .so probes, pytree deprecations, converter INFO logs)
so the CLI prints only our own progress and results. --debug leaves everything on."""
from __future__ import annotations

import logging
import os
import warnings

NOISY_LOGGERS = ("torchao", "torch.utils._pytree", "torch.onnx", "torch._export", "torch.export",
                 "torch._dynamo", "torch.fx", "coremltools", "absl", "executorch", "onnxscript", "litert_torch",
                 "tensorflow", "jax")


def quiet_third_party() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GLOG_minloglevel", "2")
    import torch  # noqa: F401  (torch._logging configures its loggers on import; override after)

    for name in NOISY_LOGGERS + ("torch.onnx._internal.exporter._registration",):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(torch|coremltools|onnxscript|executorch).*")
