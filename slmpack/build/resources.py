"""What one package build needs from the machine that runs it: memory (from the fit estimate) and CPUs.

An export holds the fp32 torch reference while the exported package runs in its runtime for the
validation ladder, on top of the imports (torch + slmpack). So its peak is estimated as

    fit(source model at fp32, the package's context) + fit(the package at its bits) + IMPORTS_MB

with ``device_tests.fit`` (weights + KV cache + activations + runtime overhead, the ``host``
profile's formulas). Checked against bench/perf (README, Performance): SmolLM-135M's whole export
with validation peaked at 1959 MB; this estimate gives 2040 MB at its default context (2048).
The converters' own imports (ExecuTorch, LiteRT, coremltools) load after preflight and are not in
IMPORTS_MB.

CPUs: every target's export is mostly single-threaded Python (tracing, lowering, encoding); the
validation runtime then uses the threads the executor grants (Ray sets OMP_NUM_THREADS to the
task's CPUs). The packages are byte-identical whatever the thread count.
"""
from __future__ import annotations

from typing import NamedTuple

from slmpack.build.recipe import BuildUnit

MB = 2**20
# Peak RSS of an export that stops at preflight (torch + slmpack imported, no model loaded):
# bench/perf's import baseline, 288 MB (2026-11-22) and 290 MB for every target (2026-12-02, 2-core x86_64).
IMPORTS_MB = 290
QUANT_BITS = {"int8": 8, "w8a8": 8, "int4": 4, "8da4w": 4}
TARGET_CPUS = {"onnx": 1, "executorch": 1, "tflite": 1, "coreml": 1}


class TaskResources(NamedTuple):
    """What one package build asks of a Ray node (``memory_mb`` from the fit estimate)."""

    memory_mb: int
    num_cpus: int

    @property
    def memory_bytes(self) -> int:
        return self.memory_mb * MB

    def to_json(self) -> dict:
        return self._asdict()


def package_bits(u: BuildUnit) -> int:
    """Bits per weight of the package's quant preset (32 for fp32 or a recipe file/plan: estimated as fp32)."""
    return QUANT_BITS.get(u.entry.quant or "", 32)


def task_resources(u: BuildUnit) -> TaskResources:
    from slmpack.device_tests.fit import fit_check
    from slmpack.bundled import demo_model_dir

    model = u.entry.model or demo_model_dir()
    reference = fit_check(model, "host", u.entry.context, 32, strict=False, fmt=u.target)
    package = fit_check(model, "host", u.entry.context, package_bits(u), strict=False, fmt=u.target)
    return TaskResources(memory_mb=int(reference.needed_mb + package.needed_mb + IMPORTS_MB) + 1,
                         num_cpus=TARGET_CPUS[u.target])
