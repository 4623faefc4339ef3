"""The export-time ladders, as step lists of the one ladder in ``slmpack.runtime.ladder``.

``run_ladder`` (float packages) runs ``HOST_FP32`` against the eager reference;
``run_quant_ladder`` (QuantPlan packages) runs ``HOST_QUANT``: pass/fail against the plan's
fake-quant reference (what the artifact should compute: a disagreement is an encoding bug), the
cost of quantization itself vs fp32 reported in ``heldout_fp32`` and held to the accuracy gate
(``ValidationConfig.max_ppl_loss``, ``--max-ppl-loss``), greedy tokens reported.
"""
from __future__ import annotations

import numpy as np

from slmpack.runtime import ladder
from slmpack.runtime.ladder import LadderInputs
from slmpack.runtime.records import Tolerance


def _tolerance(manifest: dict) -> Tolerance:
    return Tolerance.from_json(manifest["tolerance"])   # declared by the target at export time


def _structural(target, pkg_dir, manifest: dict, readback: bool):
    def check() -> list[str]:
        problems = list(target.check(pkg_dir, manifest))
        rb = manifest.get("report", {}).get("readback") or {}
        if readback and rb.get("passed") is False:
            problems += [f"read-back: {p}" for p in rb.get("problems", [])[:20]]
        return problems
    return check


def _extra(target, pkg_dir, manifest):
    def check(runner):   # e.g. one per LiteRT prefill signature; None: the target has none
        return target.extra_vectors(pkg_dir, manifest, runner, _tolerance(manifest))
    return check


def run_ladder(target, pkg_dir, manifest: dict, runner, reference, vectors: dict, heldout: np.ndarray,
               greedy_prompt: np.ndarray, greedy_n: int, eos: tuple[int, ...], exact_greedy: bool) -> dict:
    x = LadderInputs(runner=runner, tolerance=_tolerance(manifest), vectors=vectors, exact=exact_greedy,
                     structural=_structural(target, pkg_dir, manifest, readback=False),
                     extra_vectors=_extra(target, pkg_dir, manifest), reference=reference, heldout=heldout,
                     greedy_prompt=greedy_prompt, greedy_n=greedy_n, eos=eos)
    return ladder.run(ladder.HOST_FP32, x)


def run_quant_ladder(target, pkg_dir, manifest: dict, runner, fp32_ref, fq_ref, vectors: dict,
                     heldout: np.ndarray, greedy_prompt: np.ndarray, greedy_n: int, eos: tuple[int, ...],
                     fake_quant_note: str = "", max_ppl_loss: float | None = None) -> dict:
    x = LadderInputs(runner=runner, tolerance=_tolerance(manifest), vectors=vectors, exact=False,
                     structural=_structural(target, pkg_dir, manifest, readback=True),
                     extra_vectors=_extra(target, pkg_dir, manifest), reference=fq_ref, fp32_reference=fp32_ref,
                     heldout=heldout, greedy_prompt=greedy_prompt, greedy_n=greedy_n, eos=eos,
                     max_ppl_loss_pct=max_ppl_loss)
    result = ladder.run(ladder.HOST_QUANT, x)
    result["mode"] = "quantized"
    result["vectors"]["reference"] = result["heldout"]["reference"] = result["greedy"]["reference"] = "fake_quant"
    rb = manifest.get("report", {}).get("readback") or {}
    result["structural"]["readback_passed"] = rb.get("passed")
    if fake_quant_note:
        result["heldout"]["note"] = fake_quant_note
    return result
