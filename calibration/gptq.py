"""GPTQ: accurate post-training quantization for generative pre-trained transformers.

Frantar, Ashkboos, Hoefler, Alistarh, "GPTQ: Accurate Post-Training Quantization for Generative
Pre-trained Transformers", ICLR 2023, arXiv:2210.17323 (reference code: IST-DASLab/gptq, gptq.py).

Per layer with weight ``W`` [out, in] and calibration inputs ``X`` [n, in]:

1. ``H = 2/n * X^T X`` (the Hessian of the layer-wise squared error); dead input columns
   (``H_ii == 0``) get ``H_ii = 1`` and a zero weight column, as in the reference;
2. dampening: ``H += damp_percent * mean(diag(H)) * I``;
3. ``U = cholesky(H^{-1})^T`` (upper); columns are quantized left to right; the rounding error of
   column ``i`` divided by ``U_ii`` is spread over the not-yet-quantized columns with row ``U_i``;
4. lazy block updates: inside a block of ``block_size`` columns updates touch only the block; the
   accumulated error is applied to the remaining columns once per block (one matmul).

Group-wise scales are computed when the algorithm reaches the first column of a group, from the
*error-compensated* weights of that group, as in the reference. One deliberate refinement: the
reference reads the group from the not-yet-block-updated matrix when a group starts in the middle
of a block (``W[:, i1+i : ...]`` instead of ``W1``); we read the block-updated values, which makes
the lazy-batch result exactly equal to the unbatched algorithm for every block size (the two
agree whenever ``block_size`` equals ``group_size``). With ``act_order`` and groups, scales are
computed up front from the original weights ("static groups", as in AutoGPTQ) so that groups stay
contiguous in the original column order, which is what the QuantPlan stores.

Everything runs in float64 (deterministic, no Cholesky failures on tiny layers); integers are
returned in the storage convention of :mod:`slmpack.calibration.rtn`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from slmpack.errors import BadInputError

from .rtn import QuantizedWeight, compute_qparams, quantize_values, qrange


@dataclass(frozen=True)
class GPTQConfig:
    damp_percent: float = 0.01
    block_size: int = 128
    act_order: bool = False

    def __post_init__(self) -> None:
        if not 0.0 < self.damp_percent < 1.0:
            raise BadInputError(f"GPTQConfig.damp_percent must be in (0, 1), got "
                                f"{self.damp_percent!r}", "E_QUANT_SCHEME",
                                details={"field": "damp_percent"})
        if isinstance(self.block_size, bool) or not isinstance(self.block_size, int) \
                or self.block_size < 1:
            raise BadInputError(f"GPTQConfig.block_size must be a positive int, got "
                                f"{self.block_size!r}", "E_QUANT_SCHEME",
                                details={"field": "block_size"})


class HessianAccumulator:
    """Running ``H = 2/n * sum x x^T`` over calibration rows (float64)."""

    def __init__(self, in_features: int):
        self.h = torch.zeros(in_features, in_features, dtype=torch.float64)
        self.rows = 0

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, self.h.shape[0]).to(torch.float64)
        self.h += x.T @ x
        self.rows += x.shape[0]

    def hessian(self) -> torch.Tensor:
        if self.rows == 0:
            raise BadInputError("GPTQ received no calibration inputs", "E_CALIB_EMPTY")
        return self.h * (2.0 / self.rows)


def _inverse_cholesky_upper(h: torch.Tensor, damp_percent: float) -> torch.Tensor:
    damp = damp_percent * torch.mean(torch.diag(h))
    eye = torch.eye(h.shape[0], dtype=h.dtype)
    for attempt in range(4):
        chol, info = torch.linalg.cholesky_ex(h + (damp * 10 ** attempt) * eye)
        if int(info) == 0:
            hinv = torch.cholesky_inverse(chol)
            return torch.linalg.cholesky(hinv, upper=True)
    raise BadInputError("GPTQ: Hessian is not positive definite even with 1000x dampening",
                        "E_GPTQ_HESSIAN")


def gptq_quantize(weight: torch.Tensor, hessian: torch.Tensor, *, bits: int,
                  group_size: int | None, symmetric: bool,
                  config: GPTQConfig = GPTQConfig()) -> QuantizedWeight:
    """Quantize ``weight`` [out, in] with GPTQ given ``hessian`` [in, in] (see module doc)."""
    rows, cols = weight.shape
    if hessian.shape != (cols, cols):
        raise BadInputError(f"Hessian shape {tuple(hessian.shape)} does not match weight "
                            f"{tuple(weight.shape)}", "E_QUANT_SHAPE")
    if group_size is not None and cols % group_size:
        raise BadInputError(f"group size {group_size} does not divide {cols} columns",
                            "E_QUANT_GROUP_SIZE")
    qmin, qmax = qrange(bits)
    w = weight.detach().to(torch.float64).clone()
    h = hessian.detach().to(torch.float64).clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0

    n_groups = 1 if group_size is None else cols // group_size
    width = cols if group_size is None else group_size
    scales = torch.zeros(rows, n_groups, dtype=torch.float64)
    zeros = None if symmetric else torch.zeros(rows, n_groups, dtype=torch.float64)

    def set_group(g: int, block: torch.Tensor) -> None:
        s, z = compute_qparams(block, bits, symmetric)
        scales[:, g] = s.to(torch.float32).to(torch.float64)  # exactly the stored float32 scale
        if zeros is not None:
            zeros[:, g] = z

    static = group_size is None or config.act_order
    if static:  # per-channel (reference: find_params on the whole W) or static groups
        for g in range(n_groups):
            set_group(g, w[:, g * width:(g + 1) * width])

    perm = torch.arange(cols)
    if config.act_order:
        perm = torch.argsort(torch.diag(h), descending=True, stable=True)
        w, h = w[:, perm], h[perm][:, perm]
    hinv = _inverse_cholesky_upper(h, config.damp_percent)

    q_int = torch.zeros(rows, cols, dtype=torch.float64)
    bs = config.block_size
    for i1 in range(0, cols, bs):
        i2 = min(i1 + bs, cols)
        w1 = w[:, i1:i2].clone()
        err1 = torch.zeros_like(w1)
        hinv1 = hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = int(perm[i1 + i])
            g = col // width
            if not static and col % width == 0:
                # group params from the error-compensated weights: the block part from w1, any
                # part past the block from w plus the block's pending (lazy) error updates
                hi = col + width
                rest = w[:, i2:max(hi, i2)] - err1 @ hinv[i1:i2, i2:max(hi, i2)]
                set_group(g, torch.cat([w1[:, i:min(hi, i2) - i1], rest], dim=1))
            s = scales[:, g]
            z = None if zeros is None else zeros[:, g]
            wc = w1[:, i]
            qc = quantize_values(wc[:, None], s, z, bits)[:, 0]
            q_int[:, i1 + i] = qc
            deq = (qc - (0 if z is None else z)) * s
            e = (wc - deq) / hinv1[i, i]
            w1[:, i:] -= e[:, None] * hinv1[i, i:][None, :]
            err1[:, i] = e
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]

    if config.act_order:
        inv = torch.argsort(perm)
        q_int = q_int[:, inv]
    assert int(q_int.min()) >= qmin and int(q_int.max()) <= qmax
    return QuantizedWeight(
        q=q_int.to(torch.int8).contiguous(),
        scale=scales.to(torch.float32).contiguous(),
        zero_point=None if zeros is None else zeros.to(torch.int8).contiguous(),
        bits=bits, group_size=group_size)
