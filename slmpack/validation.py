"""The validation ladder, target-independent, over the Runner protocol.

  (a) structural   the target's own check of the artifact (``target.check``)
  (b) vectors      logits on the package's test vectors vs eager, within the target's tolerance
  (c) held-out     >= N held-out tokens: top-1 agreement, mean KL(ref || artifact), perplexity
  (d) greedy       greedy continuation equals the reference (required for fp32 exports)
  (e) long context a prompt filling the context but for a few positions, prefilled in chunks of
                   max_prompt, then decoded to the last positions: logits vs the reference
  (f) tokenizer    the runtime's own tokenizer vs Hugging Face's on the parity corpus (ids + decode)
"""
from __future__ import annotations

import numpy as np

from slmpack.metrics import LogitComparison
from slmpack.exporter.reference_runner import greedy


def check_vectors(runner, vectors: dict[str, np.ndarray], tol) -> dict:
    runner.reset()
    pre = runner.prefill(vectors["prompt_ids"])
    diff_pre = float(np.abs(pre - vectors["prefill_logits"]).max())
    pos = len(vectors["prompt_ids"])
    diffs = []
    for i, tok in enumerate(vectors["decode_ids"]):
        out = runner.decode(int(tok), pos + i)
        diffs.append(float(np.abs(out - vectors["decode_logits"][i]).max()))
    diff_dec = max(diffs) if diffs else 0.0
    bound = tol.atol + tol.rtol * float(np.abs(vectors["prefill_logits"]).max())
    return {"prefill_max_abs_diff": diff_pre, "decode_max_abs_diff": diff_dec, "bound": bound,
            "passed": diff_pre <= bound and diff_dec <= bound}


def compare_windows(runners: dict, pairs: dict, tokens: np.ndarray, window: int) -> tuple[dict, int]:
    """Prefill windows of held-out text through every runner once and accumulate each comparison
    ``pairs = {name: (reference runner, test runner)}`` window by window (one window of logits in
    memory). Returns ({name: metrics}, tokens compared)."""
    accs = {k: LogitComparison() for k in pairs}
    for start in range(0, len(tokens) - 1, window):
        chunk = tokens[start:start + window + 1]
        if len(chunk) < 2:
            break
        logits = {}
        for name, r in runners.items():
            r.reset()
            logits[name] = r.prefill(chunk[:-1])
        for k, (a, b) in pairs.items():
            accs[k].add(logits[a], logits[b], chunk[1:])
    n = next(iter(accs.values())).n if accs else 0
    return {k: a.result() for k, a in accs.items()}, n


def check_heldout(runner, reference, tokens: np.ndarray, window: int) -> dict:
    """Prefill windows of held-out text through both runners and compare next-token distributions."""
    m, n = compare_windows({"reference": reference, "artifact": runner}, {"h": ("reference", "artifact")},
                           tokens, window)
    return {"tokens": n, **m["h"]}


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
    tol = target.tolerance_for(manifest) if hasattr(target, "tolerance_for") else target.tolerance
    structural = target.check(pkg_dir, manifest)
    result: dict = {"structural": {"problems": structural, "passed": not structural}}
    result["vectors"] = check_vectors(runner, vectors, tol)
    if hasattr(target, "check_extra_vectors"):  # target-specific vectors (e.g. one per TFLite signature)
        extra = target.check_extra_vectors(pkg_dir, manifest, runner)
        result["vectors"]["extra"] = extra
        result["vectors"]["passed"] = result["vectors"]["passed"] and extra["passed"]
    window = min(runner.max_prompt, 128)
    result["heldout"] = check_heldout(runner, reference, heldout, window)
    # a tolerance that waives greedy exactness was declared for a lossy precision (e.g. Core ML fp16
    # compute): its min_top1 is then the requirement even though the export is not exact
    required = tol.min_top1 if (exact_greedy or not tol.greedy_exact) else 0.0
    result["heldout"]["passed"] = result["heldout"]["top1_agreement"] >= required
    ref_ids = greedy(reference, greedy_prompt, greedy_n, eos)
    art_ids = greedy(runner, greedy_prompt, greedy_n, eos)
    match = ref_ids == art_ids
    first_diff = next((i for i, (a, b) in enumerate(zip(ref_ids, art_ids)) if a != b), None)
    result["greedy"] = {"tokens": len(ref_ids), "match": match, "first_mismatch": first_diff,
                        "reference_ids": ref_ids, "artifact_ids": art_ids,
                        "passed": match or not (exact_greedy and tol.greedy_exact)}
    result["long_context"] = check_long_context(runner, reference, heldout, int(manifest["model"]["max_context"]),
                                                tol, exact_greedy and tol.greedy_exact)
    result["tokenizer_parity"] = check_tokenizer_parity(manifest["target"], pkg_dir, manifest)
    result["passed"] = all(result[k]["passed"] for k in ("structural", "vectors", "heldout", "greedy", "long_context",
                                                         "tokenizer_parity"))
    return _round(result)


def check_tokenizer_parity(target_name: str, pkg_dir, manifest: dict) -> dict:
    """(f) the runtime's own tokenizer vs HF on the parity corpus; a mismatch names runtime + line."""
    from slmpack.exporter.tokenizer_parity import certify

    runtimes = certify(target_name, pkg_dir, manifest)
    failures = [f"{name}: line {p.first_mismatch} ({p.detail})" for name, p in runtimes.items() if not p.passed]
    return {"runtimes": {k: p.to_json() for k, p in runtimes.items()}, "failures": failures,
            "passed": not failures}


def _round(x):
    if isinstance(x, float):
        return float(f"{x:.6g}")
    if isinstance(x, dict):
        return {k: _round(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_round(v) for v in x]
    return x
