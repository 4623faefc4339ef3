"""``--quant from-gguf``: a calibrated QuantPlan whose integers and scales are the GGUF's blocks.

Which GGUF types match a QuantPlan scheme exactly (``w = (q - zp) * scale`` per group of 32
columns, ``q`` int8 in the bit width's signed range, ``scale`` float32, ``zp`` an integer):

* ``Q8_0``  -> int8 symmetric g32: ``q`` the block's 32 int8, ``scale`` its fp16 ``d`` (exact in float32);
* ``Q4_0``  -> int4 symmetric g32: ``q = nibble - 8`` in [-8, 7], ``scale = d`` (llama.cpp makes
  ``d = max / -8``, often negative; the plan keeps the sign, since flipping it would need q = +8);
* ``F32`` / ``F16`` / ``BF16`` -> kept float (weight scheme None);
* ``Q4_1`` (``w = d * u + m``), ``Q4_K`` (``d * sc * u - dmin * m`` on sub-blocks of 32) and
  ``Q6_K`` (6-bit codes, sub-blocks of 16) match none: an integer zero point would have to be
  ``-m / d``, which is not an integer, and no plan scheme has 6 bits. A Linear/Embedding weight of
  such a type is refused with ``E_GGUF_INEXACT`` (export without ``--quant`` to use its exact
  dequantized values, or re-quantize with ``--quant int4`` / ``int8``); nothing is rounded silently.

A block with ``d == 0`` is all zeros; the plan's convention gives such a group ``scale = 1`` and
``q = 0`` (llama.cpp's own ``q`` there is 0 too), so the dequantized values are the file's exactly.
Rows move with llama's q/k un-permutation (``to_hf.row_order``). Tied weights (no
``output.weight``) are stored once, under the embedding.
"""
from __future__ import annotations

import numpy as np
import torch
from gguf.constants import GGMLQuantizationType as T

from slmpack.calibration.decisions import DecisionKind, TensorDecision
from slmpack.calibration.plan import QuantPlan
from slmpack.calibration.rtn import QuantizedWeight
from slmpack.calibration.schemes import FLOAT_ACTIVATIONS, WeightScheme
from slmpack.errors import BadInputError
from slmpack.exporter.gguf import to_hf
from slmpack.exporter.gguf.reader import GgufFile

GROUP = 32
MATCHING = {T.Q8_0: WeightScheme(bits=8, group_size=GROUP), T.Q4_0: WeightScheme(bits=4, group_size=GROUP)}
FLOAT_TYPES = (T.F32, T.F16, T.BF16)
RECIPE = "from-gguf"


def unpack_blocks(raw: np.ndarray, qtype: T) -> tuple[np.ndarray, np.ndarray]:
    """(q int8 [rows, cols], d float32 [rows, cols // 32]) of Q8_0 / Q4_0 rows ``raw`` [rows, bytes]."""
    rows = raw.shape[0]
    size = 34 if qtype is T.Q8_0 else 18
    blocks = np.ascontiguousarray(raw).reshape(rows, -1, size)
    d = blocks[..., :2].copy().view(np.float16)[..., 0].astype(np.float32)
    if qtype is T.Q8_0:
        q = blocks[..., 2:].copy().view(np.int8)
    else:   # byte j holds element j (low nibble) and element j + 16 (high nibble)
        qs = blocks[..., 2:]
        q = (np.concatenate([qs & 0x0F, qs >> 4], axis=-1).astype(np.int16) - 8).astype(np.int8)
    return q.reshape(rows, -1), d


def _weight(g: GgufFile, name: str, order, scheme: WeightScheme) -> QuantizedWeight:
    q, d = unpack_blocks(g.raw(name), g.tensors[name].qtype)
    if order is not None:
        q, d = q[order], d[order]
    if not np.isfinite(d).all():
        raise BadInputError(f"{g.where}: tensor {name} has NaN or Inf block scales", "E_WEIGHTS_NONFINITE")
    zero = d == 0
    q = np.where(np.repeat(zero, GROUP, axis=1), 0, q).astype(np.int8)
    d = np.where(zero, np.float32(1.0), d).astype(np.float32)
    return QuantizedWeight(q=torch.from_numpy(np.ascontiguousarray(q)), scale=torch.from_numpy(np.ascontiguousarray(d)),
                           zero_point=None, bits=scheme.bits, group_size=GROUP)


def from_gguf_plan(g: GgufFile, cfg: dict, layout) -> QuantPlan:
    """The plan for every Linear/Embedding weight of ``layout`` (``quantize_stage.model_layout``)."""
    by_hf = {hf: n for n, hf in to_hf.name_map(g, cfg).items()}
    inexact = {}
    decisions, weights = {}, {}
    for hf in sorted(layout.shapes):
        owner = layout.ties.get(hf, hf)
        qtype = g.tensors[by_hf[owner]].qtype
        if qtype not in MATCHING and qtype not in FLOAT_TYPES:
            inexact[by_hf[owner]] = qtype.name
            continue
        scheme = MATCHING.get(qtype)
        decisions[hf] = TensorDecision(
            name=hf, kind=DecisionKind.EMBEDDING if hf in layout.embeddings else DecisionKind.LINEAR,
            shape=tuple(layout.shapes[hf]), weight=scheme, activation=FLOAT_ACTIVATIONS, rule=None,
            tied_to=layout.ties.get(hf))
        if scheme is not None and hf not in layout.ties:
            weights[hf] = _weight(g, by_hf[hf], to_hf.row_order(cfg, hf), scheme)
    if inexact:
        listing = ", ".join(f"{n} ({t})" for n, t in sorted(inexact.items()))
        raise BadInputError(
            f"--quant from-gguf keeps GGUF integers only for Q8_0 (int8 g32) and Q4_0 (int4 symmetric g32); "
            f"{len(inexact)} tensor(s) are stored in types no QuantPlan scheme represents exactly: {listing}. "
            "Export without --quant (exact dequantized weights) or re-quantize with --quant int4/int8",
            "E_GGUF_INEXACT", details={"tensors": inexact})
    if not weights:
        raise BadInputError(f"--quant from-gguf: no Linear/Embedding weight of {g.where} is Q8_0 or Q4_0 (all are "
                            "float); export without --quant", "E_CONFIG", details={"field": "quant"})
    return QuantPlan(recipe=RECIPE, decisions=decisions, weights=weights,
                     calibration={"source": "gguf", "gguf_sha256": g.sha256})
