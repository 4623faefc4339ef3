"""The validation ladder for quantized packages (target-independent, over the Runner protocol).

A quantized artifact is compared with two references:

* the plan's **fake-quant reference** (fp32 reference with the plan's dequantized weights, fold
  overrides and, where the plan quantizes activations, matching activation fake-quant): what
  the artifact *should* compute. Disagreement here is an encoding bug; this decides pass/fail
  (top-1 agreement >= the target's quantized ``min_top1``, test vectors within its quantized
  tolerance, read-back identical);
* the **fp32 reference**: perplexity delta, mean KL and top-1 agreement are reported (the cost
  of quantization itself), never failed on, and so is the fake-quant reference's own distance
  from fp32, which separates quantization error from encoding error.

  (a) structural   the target's check + its read-back of the stored integers (``readback``)
  (b) vectors      test vectors (fake-quant logits) within the target's quantized tolerance
  (c) held-out     vs fake-quant: pass on top-1; vs fp32: reported
  (d) greedy       reported (quantized exports need not reproduce fp32 greedy tokens)
"""
from __future__ import annotations

import numpy as np

from slmpack.exporter.reference_runner import greedy
from slmpack.runtime.records import Tolerance
from slmpack.validation import _round, check_vectors, compare_windows


def run_quant_ladder(target, pkg_dir, manifest: dict, runner, fp32_ref, fq_ref, vectors: dict,
                     heldout: np.ndarray, greedy_prompt: np.ndarray, greedy_n: int, eos: tuple[int, ...],
                     fake_quant_note: str = "") -> dict:
    tol = Tolerance.from_json(manifest["tolerance"])   # declared by the target at export time
    problems = list(target.check(pkg_dir, manifest))
    rb = manifest.get("report", {}).get("readback") or {}
    if rb.get("passed") is False:
        problems += [f"read-back: {p}" for p in rb.get("problems", [])[:20]]
    result: dict = {"mode": "quantized", "structural": {"problems": problems, "passed": not problems,
                                                        "readback_passed": rb.get("passed")}}
    result["vectors"] = check_vectors(runner, vectors, tol)
    result["vectors"]["reference"] = "fake_quant"
    extra = target.extra_vectors(pkg_dir, manifest, runner, tol)
    if extra is not None:
        result["vectors"]["extra"] = extra
        result["vectors"]["passed"] = result["vectors"]["passed"] and extra["passed"]
    window = min(runner.max_prompt, 128)
    m, n = compare_windows({"artifact": runner, "fake_quant": fq_ref, "fp32": fp32_ref},
                           {"vs_fq": ("fake_quant", "artifact"), "vs_fp32": ("fp32", "artifact"),
                            "fq_vs_fp32": ("fp32", "fake_quant")}, heldout, window)
    vs_fq = m["vs_fq"]
    result["heldout"] = {"tokens": n, "reference": "fake_quant", **vs_fq,
                         "min_top1": tol.min_top1, "passed": vs_fq["top1_agreement"] >= tol.min_top1}
    result["heldout_fp32"] = {"tokens": n, "reference": "fp32", **m["vs_fp32"], "fake_quant_vs_fp32": m["fq_vs_fp32"]}
    if fake_quant_note:
        result["heldout"]["note"] = fake_quant_note
    fq_ids = greedy(fq_ref, greedy_prompt, greedy_n, eos)
    art_ids = greedy(runner, greedy_prompt, greedy_n, eos)
    fp_ids = greedy(fp32_ref, greedy_prompt, greedy_n, eos)
    first = next((i for i, (a, b) in enumerate(zip(fq_ids, art_ids)) if a != b), None)
    result["greedy"] = {"tokens": len(fq_ids), "match": fq_ids == art_ids, "first_mismatch": first,
                        "reference": "fake_quant", "reference_ids": fq_ids, "artifact_ids": art_ids,
                        "matches_fp32": art_ids == fp_ids, "fp32_ids": fp_ids, "passed": True}
    result["passed"] = all(result[k]["passed"] for k in ("structural", "vectors", "heldout", "greedy"))
    return _round(result)
