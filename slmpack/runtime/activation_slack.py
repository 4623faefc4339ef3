"""How much a plan's dynamic int8 activations move its own outputs: the slack the ladder allows
between the runtime and our fake-quant reference.

Dynamic activation quantization rounds every linear input to int8 at run time. Our fake-quant
reference and the runtime implement the same scheme (per token / per block, absmax / 127), but
not bit for bit: MLAS and XNNPACK compute scales with their own reciprocal and accumulate int32
dot products in their own order, and each CPU family has its own kernels. One flipped rounding
early in a deep model moves every later activation. Two valid implementations of one rounding
scheme can therefore differ by up to the scheme's whole effect, measured here as the difference
between the reference *with* activation fake-quant and the same reference with float
activations (same integer weights):

* test vectors: the bound grows by ``2 * max|logits - logits_float_activations|``
  (``ladder.check_vectors`` reads the float-activation logits stored beside the vectors, so
  ``validate`` and the device runner apply the same slack);
* held-out top-1: the requirement becomes ``min(min_top1, 1 - 2 * (1 - a))`` where ``a`` is the
  top-1 agreement of the two references on the held-out text.

Weight-only plans have no activation hooks and no slack. An encoding bug (wrong scales, wrong
integers, a missing tensor) still fails: the read-back compares every integer with the plan, and
the fp32 comparison and the accuracy gate judge the plan itself.
"""
from __future__ import annotations

import numpy as np

FLOAT_ACT_PREFILL = "prefill_logits_float_activations"
FLOAT_ACT_DECODE = "decode_logits_float_activations"
FLOAT_ACT_TOP1 = "heldout_top1_vs_float_activations"


def vector_slack(vectors: dict) -> float:
    """``2 * max|logits - logits_float_activations|`` over prefill and decode (0 without them)."""
    if FLOAT_ACT_PREFILL not in vectors:
        return 0.0
    d = float(np.abs(np.asarray(vectors["prefill_logits"]) - np.asarray(vectors[FLOAT_ACT_PREFILL])).max())
    if len(vectors["decode_logits"]):
        d = max(d, float(np.abs(np.asarray(vectors["decode_logits"]) - np.asarray(vectors[FLOAT_ACT_DECODE])).max()))
    return 2.0 * d


def top1_requirement(min_top1: float, vectors: dict) -> float:
    """``min(min_top1, 1 - 2 * (1 - a))``, or ``min_top1`` without a measurement."""
    if FLOAT_ACT_TOP1 not in vectors:
        return min_top1
    a = float(np.asarray(vectors[FLOAT_ACT_TOP1]).reshape(-1)[0])
    return min(min_top1, max(0.0, 1.0 - 2.0 * (1.0 - a)))
