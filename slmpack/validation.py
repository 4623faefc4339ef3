"""The export-time ladders, as step lists of the one ladder in ``slmpack.runtime.ladder``.

``run_ladder`` (float packages) runs ``HOST_FP32`` against the eager reference;
``run_quant_ladder`` (QuantPlan packages) runs ``HOST_QUANT``: pass/fail against the plan's
fake-quant reference (what the artifact should compute: a disagreement is an encoding bug), the
cost of quantization itself vs fp32 reported in ``heldout_fp32`` and held to the accuracy gate
(``ValidationConfig.max_ppl_loss``, ``--max-ppl-loss``), greedy tokens reported.

Float packages also run two export-time steps here:
  (e) long_context      a prompt filling the context but for a few positions, prefilled in chunks of
                        max_prompt, then decoded to position context - 2: logits vs the reference;
  (f) tokenizer_parity  the runtime's own tokenizer vs Hugging Face's on the parity corpus (ids +
                        decode); a mismatch fails the ladder, naming the runtime and the line.
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


LONG_CONTEXT_DECODE = 3


def check_long_context(runner, reference, tokens: np.ndarray, context: int, tol, required: bool) -> dict:
    """Chunked prefill of ``context - 1 - LONG_CONTEXT_DECODE`` tokens (held-out text, repeated),
    then decode up to position ``context - 1``; compare every step's logits with the reference."""
    n = max(1, context - 1 - LONG_CONTEXT_DECODE)
    prompt = np.resize(np.asarray(tokens, dtype=np.int64), n)
    diffs, agree, steps = [], 0, 0
    outs, chunk = {}, runner.max_prompt   # the reference prefills in the same chunks (bounded memory)
    for name, r in (("reference", reference), ("artifact", runner)):
        r.reset()
        logits = None
        for start in range(0, n, chunk):
            logits = r.prefill(prompt[start:start + chunk])[-1]
        seq = [logits]
        for i in range(min(LONG_CONTEXT_DECODE, context - n)):
            seq.append(r.decode(int(prompt[i]), n + i))   # teacher-forced: same tokens for both
        outs[name] = seq
    for a, b in zip(outs["reference"], outs["artifact"]):
        diffs.append(float(np.abs(a - b).max()))
        agree += int(np.argmax(a) == np.argmax(b))
        steps += 1
    bound = tol.atol + tol.rtol * float(max(np.abs(a).max() for a in outs["reference"]))
    diff = max(diffs)
    return {"prompt_tokens": n, "last_position": n + steps - 2, "chunk": chunk, "max_abs_diff": diff,
            "top1_agreement": agree / steps, "bound": bound, "passed": diff <= bound or not required}


def run_ladder(target, pkg_dir, manifest: dict, runner, reference, vectors: dict, heldout: np.ndarray,
               greedy_prompt: np.ndarray, greedy_n: int, eos: tuple[int, ...], exact_greedy: bool) -> dict:
    x = LadderInputs(runner=runner, tolerance=_tolerance(manifest), vectors=vectors, exact=exact_greedy,
                     structural=_structural(target, pkg_dir, manifest, readback=False),
                     extra_vectors=_extra(target, pkg_dir, manifest), reference=reference, heldout=heldout,
                     greedy_prompt=greedy_prompt, greedy_n=greedy_n, eos=eos)
    result = ladder.run(ladder.HOST_FP32, x)
    tol = _tolerance(manifest)
    # enforced where the cache keeps fp32 K/V; a 16-bit cache (Core ML states) drifts with position
    # beyond the short-vector bound by its own rounding, so there the step is reported, not enforced
    full_cache = "16" not in str((manifest.get("kv_cache") or {}).get("dtype", "float32"))
    result["long_context"] = ladder.rounded(check_long_context(
        runner, reference, heldout, int(manifest["model"]["max_context"]), tol,
        exact_greedy and tol.greedy_exact and full_cache))
    result["tokenizer_parity"] = check_tokenizer_parity(manifest["target"], pkg_dir, manifest)
    result["passed"] = bool(result["passed"] and result["long_context"]["passed"]
                            and result["tokenizer_parity"]["passed"])
    return result


def check_tokenizer_parity(target_name: str, pkg_dir, manifest: dict) -> dict:
    """(f) the runtime's own tokenizer vs HF on the parity corpus; a mismatch names runtime + line."""
    from slmpack.tokenizer_parity import certify

    runtimes = certify(target_name, pkg_dir, manifest)
    failures = [f"{name}: line {p.first_mismatch} ({p.detail})" for name, p in runtimes.items() if not p.passed]
    return {"runtimes": {k: p.to_json() for k, p in runtimes.items()}, "failures": failures,
            "not_checked": {name: p.not_checked for name, p in runtimes.items() if p.not_checked},
            "passed": not failures}


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
