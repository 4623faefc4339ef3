"""THE validation ladder: one implementation over the Runner protocol, used by export, the
quantized ladder, ``slmpack validate``, ``slmpack.load(...).validate()`` and the device runner.

A ladder is an explicit list of steps (``Step``), run in order over one ``LadderInputs``:

  structural  the caller's structural check (target check + read-back on the host; integrity
              and manifest rules on a device): no problems
  vectors     prefill and per-token decode logits vs the package's test vectors, within the
              target's declared tolerance (``tolerance.for_manifest``, never the manifest's)
  heldout     >= N held-out tokens vs a reference runner: top-1 agreement, mean KL, perplexity
  greedy      greedy tokens vs the reference's (exact where the tolerance demands it)
  heldout_fp32 (plans) the artifact vs fp32 on the held-out text: reported, and the accuracy
              gate: perplexity loss above the budget fails with the better recipes named

``HOST_FP32``, ``HOST_QUANT`` and ``DEVICE`` are the step lists the callers use.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from .activation_slack import top1_requirement, vector_slack
from .greedy import greedy, prefill_all
from .metrics import LogitComparison
from .records import Tolerance

BETTER_RECIPES = ("int8 (weight-only int8)", "int4 --algorithm gptq", "mixed precision (--max-ppl-increase)")


class Step(str, enum.Enum):
    STRUCTURAL = "structural"
    VECTORS = "vectors"
    HELDOUT = "heldout"
    GREEDY = "greedy"
    HELDOUT_FP32 = "heldout_fp32"


@dataclass
class LadderInputs:
    """What the steps read. ``reference`` is any Runner (eager PyTorch on the host; the plan's
    fake-quant reference for plans); ``fp32_reference`` only for the quantized step."""

    runner: object
    tolerance: Tolerance
    vectors: dict
    exact: bool = True
    structural: Callable[[], list[str]] = lambda: []
    extra_vectors: Callable[[object], dict] | None = None
    reference: object | None = None
    fp32_reference: object | None = None
    heldout: np.ndarray | None = None
    greedy_prompt: np.ndarray | None = None
    greedy_n: int = 32
    eos: Sequence[int] = ()
    max_ppl_loss_pct: float | None = None
    notes: dict = field(default_factory=dict)


def check_vectors(runner, vectors: dict, tol: Tolerance) -> dict:
    runner.reset()
    pre = runner.prefill(vectors["prompt_ids"])
    ref_pre = vectors["prefill_logits"]
    if pre.shape != ref_pre.shape:
        return {"passed": False, "problem": f"prefill logits {pre.shape} != reference {ref_pre.shape}"}
    diff_pre = float(np.abs(pre - ref_pre).max())
    pos = len(vectors["prompt_ids"])
    rows = [runner.decode(int(t), pos + i) for i, t in enumerate(vectors["decode_ids"])]
    diffs = [float(np.abs(r - vectors["decode_logits"][i]).max()) for i, r in enumerate(rows)]
    diff_dec = max(diffs) if diffs else 0.0
    slack = vector_slack(vectors)   # dynamic int8 activations: 2x their own measured effect
    bound = tol.atol + tol.rtol * float(np.abs(ref_pre).max()) + slack
    top1 = [float(np.mean(pre.argmax(-1) == ref_pre.argmax(-1)))]
    if rows:
        top1.append(float(np.mean(np.stack(rows).argmax(-1) == vectors["decode_logits"].argmax(-1))))
    return {"prefill_max_abs_diff": diff_pre, "decode_max_abs_diff": diff_dec, "bound": bound,
            **({"activation_slack": slack} if slack else {}),
            "prefill_top1_agreement": top1[0], "decode_top1_agreement": top1[-1],
            "prefill_within_tolerance": diff_pre <= bound, "decode_within_tolerance": diff_dec <= bound,
            "passed": diff_pre <= bound and diff_dec <= bound}


def compare_windows(runners: dict, pairs: dict, tokens: np.ndarray, window: int) -> tuple[dict, int]:
    """Prefill windows of held-out text through every runner once; accumulate each comparison
    ``pairs = {name: (reference runner, test runner)}`` window by window."""
    accs = {k: LogitComparison() for k in pairs}
    for start in range(0, len(tokens) - 1, window):
        chunk = tokens[start:start + window + 1]
        if len(chunk) < 2:
            break
        logits = {name: prefill_all(r, chunk[:-1]) for name, r in runners.items()}
        for k, (a, b) in pairs.items():
            accs[k].add(logits[a], logits[b], chunk[1:])
    n = next(iter(accs.values())).n if accs else 0
    return {k: a.result() for k, a in accs.items()}, n


def _structural(x: LadderInputs) -> dict:
    problems = list(x.structural())
    return {"problems": problems, "passed": not problems}


def _vectors(x: LadderInputs) -> dict:
    out = check_vectors(x.runner, x.vectors, x.tolerance)
    extra = x.extra_vectors(x.runner) if x.extra_vectors is not None else None
    if extra is not None:  # target-specific vectors (e.g. one per LiteRT signature)
        out["extra"] = extra
        out["passed"] = out["passed"] and extra["passed"]
    return out


def _heldout(x: LadderInputs) -> dict:
    window = min(x.runner.max_prompt, 128)
    m, n = compare_windows({"reference": x.reference, "artifact": x.runner}, {"h": ("reference", "artifact")},
                           x.heldout, window)
    # a tolerance that waives greedy exactness was declared for a lossy precision: its min_top1 is
    # then the requirement even though the export is not exact
    required = x.tolerance.min_top1 if (x.exact or not x.tolerance.greedy_exact) else 0.0
    required = top1_requirement(required, x.vectors)   # dynamic activations: see activation_slack
    return {"tokens": n, **m["h"], "min_top1": required, "passed": m["h"]["top1_agreement"] >= required}


def _greedy(x: LadderInputs) -> dict:
    if x.reference is not None:
        ref_ids = greedy(x.reference, x.greedy_prompt, x.greedy_n, x.eos)
        prompt = x.greedy_prompt
    else:  # the package's own reference tokens
        ref_ids = [int(t) for t in x.vectors["greedy_ids"]]
        prompt = x.vectors["greedy_prompt_ids"]
    art_ids = greedy(x.runner, prompt, len(ref_ids), x.eos)
    first = next((i for i, (a, b) in enumerate(zip(ref_ids, art_ids)) if a != b), None)
    required = x.exact and x.tolerance.greedy_exact
    return {"tokens": len(ref_ids), "match": ref_ids == art_ids, "first_mismatch": first,
            "reference_ids": ref_ids, "artifact_ids": art_ids, "passed": ref_ids == art_ids or not required}


def _quantized(x: LadderInputs) -> dict:
    """The plan's cost vs fp32 (reported) and the accuracy gate on its perplexity loss."""
    window = min(x.runner.max_prompt, 128)
    m, n = compare_windows({"artifact": x.runner, "fp32": x.fp32_reference, "fake_quant": x.reference},
                           {"vs_fp32": ("fp32", "artifact"), "fq_vs_fp32": ("fp32", "fake_quant")}, x.heldout, window)
    loss = m["vs_fp32"]["perplexity_delta_pct"]
    out = {"tokens": n, "reference": "fp32", **m["vs_fp32"], "fake_quant_vs_fp32": m["fq_vs_fp32"],
           "max_ppl_loss_pct": x.max_ppl_loss_pct}
    if x.max_ppl_loss_pct is None:
        out["passed"] = True
    else:
        out["passed"] = loss <= x.max_ppl_loss_pct
        if not out["passed"]:
            out["gate"] = (f"perplexity +{loss:.2f}% vs fp32 exceeds the budget of +{x.max_ppl_loss_pct:g}% "
                           f"(--max-ppl-loss); try a better recipe: {', '.join(BETTER_RECIPES)}")
    return out


RUN = {Step.STRUCTURAL: _structural, Step.VECTORS: _vectors, Step.HELDOUT: _heldout, Step.GREEDY: _greedy,
       Step.HELDOUT_FP32: _quantized}
HOST_FP32 = (Step.STRUCTURAL, Step.VECTORS, Step.HELDOUT, Step.GREEDY)
HOST_QUANT = (Step.STRUCTURAL, Step.VECTORS, Step.HELDOUT, Step.GREEDY, Step.HELDOUT_FP32)
PACKAGE_ONLY = (Step.STRUCTURAL, Step.VECTORS, Step.GREEDY)   # no source model: validate, load, device


def run(steps: Sequence[Step], x: LadderInputs, *, stop_on_structural: bool = False) -> dict:
    """Run ``steps`` in order; ``{step: result, ..., "passed": all steps passed}``."""
    result: dict = {}
    for step in steps:
        result[step.value] = RUN[step](x)
        if step is Step.STRUCTURAL and stop_on_structural and not result[step.value]["passed"]:
            break
    result["passed"] = all(result[s.value]["passed"] for s in steps if s.value in result) and \
        all(s.value in result for s in steps)
    return rounded(result)


def rounded(x):
    if isinstance(x, bool) or x is None:
        return x
    if isinstance(x, (float, np.floating)):
        return float(f"{float(x):.6g}")
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    if isinstance(x, dict):
        return {k: rounded(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [rounded(v) for v in x]
    return x


__all__ = ["Step", "LadderInputs", "run", "check_vectors", "compare_windows", "HOST_FP32", "HOST_QUANT",
           "PACKAGE_ONLY", "BETTER_RECIPES", "rounded"]
