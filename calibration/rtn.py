"""Round-to-nearest (RTN) weight quantization, per output channel or per group of input columns.

Storage convention (shared by every algorithm and by the QuantPlan):

* weights are 2-D ``[rows, cols]`` (Linear ``[out, in]``, Embedding ``[vocab, hidden]``); scales
  are float32 ``[rows, n_groups]`` with ``n_groups = cols // group_size`` (1 for per-channel);
  group ``g`` covers columns ``[g*group_size, (g+1)*group_size)``.
* integer values are int8 tensors holding the signed range ``[-2^(b-1), 2^(b-1)-1]`` (int4 is
  stored unpacked in ``[-8, 7]``; targets pack).
* symmetric: ``scale = absmax / (2^(b-1)-1)``, ``q = clamp(round(w/scale), -2^(b-1), 2^(b-1)-1)``,
  ``w ~= q * scale``; no zero point.
* asymmetric: the textbook unsigned code ``u in [0, 2^b-1]`` with zero point ``z_u`` is stored
  *shifted by -2^(b-1)* (signed offset): ``q = u - 2^(b-1)``, ``zp = z_u - 2^(b-1)``, both int8 in
  the signed range. Dequantization is ``w ~= (q - zp) * scale`` (identical to ``(u - z_u)*scale``).
  ``scale = (max - min) / (2^b - 1)`` with the range widened to include 0, so 0.0 is exact.
* an all-zero group gets ``scale = 1`` (and q = 0) so no target ever divides by zero.
Rounding is round-half-to-even (``torch.round``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from slmpack.errors import BadInputError


def qrange(bits: int) -> tuple[int, int]:
    """Signed storage range ``(-2^(b-1), 2^(b-1)-1)`` used for both symmetric and asymmetric."""
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


@dataclass(frozen=True, eq=False)  # holds tensors: compare fields explicitly
class QuantizedWeight:
    """Integer weight + its scales: ``q`` int8 [rows, cols], ``scale`` float32 [rows, n_groups],
    ``zero_point`` int8 [rows, n_groups] or None (symmetric)."""

    q: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor | None
    bits: int
    group_size: int | None

    @property
    def symmetric(self) -> bool:
        return self.zero_point is None

    def dequantize(self) -> torch.Tensor:
        return dequantize(self.q, self.scale, self.zero_point, self.group_size)


def _group_width(cols: int, group_size: int | None) -> int:
    if group_size is None:
        return cols
    if cols % group_size:
        raise BadInputError(f"group size {group_size} does not divide {cols} columns",
                            "E_QUANT_GROUP_SIZE")
    return group_size


def compute_qparams(w: torch.Tensor, bits: int, symmetric: bool
                    ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scale (and signed-offset zero point) for each row of ``w`` [n, k] -> ([n], [n] or None).

    Works in ``w``'s dtype; callers pass float32 (RTN) or float64 (GPTQ)."""
    qmin, qmax = qrange(bits)
    if symmetric:
        absmax = w.abs().amax(dim=1)
        scale = absmax / qmax
        return torch.where(absmax > 0, scale, torch.ones_like(scale)), None
    lo = w.amin(dim=1).clamp(max=0)
    hi = w.amax(dim=1).clamp(min=0)
    scale = (hi - lo) / (qmax - qmin)
    scale = torch.where(hi > lo, scale, torch.ones_like(scale))
    zp = (torch.round(-lo / scale) + qmin).clamp(qmin, qmax)
    return scale, zp


def quantize_values(w: torch.Tensor, scale: torch.Tensor, zp: torch.Tensor | None,
                    bits: int) -> torch.Tensor:
    """Integer codes (same float dtype as ``w``) for ``w`` [n, k] with per-row ``scale``/``zp`` [n]
    (or broadcastable [n, 1])."""
    qmin, qmax = qrange(bits)
    if scale.dim() == 1:
        scale = scale[:, None]
        zp = None if zp is None else zp[:, None]
    q = torch.round(w / scale)
    if zp is not None:
        q = q + zp
    return q.clamp(qmin, qmax)


def dequantize(q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None,
               group_size: int | None) -> torch.Tensor:
    """float32 ``[rows, cols]`` from stored integers, scales [rows, n_groups], zero points."""
    rows, cols = q.shape
    width = _group_width(cols, group_size)
    qf = q.to(torch.float32).reshape(rows, cols // width, width)
    if zero_point is not None:
        qf = qf - zero_point.to(torch.float32)[:, :, None]
    return (qf * scale.to(torch.float32)[:, :, None]).reshape(rows, cols)


def quantize_rtn(weight: torch.Tensor, bits: int, group_size: int | None,
                 symmetric: bool) -> QuantizedWeight:
    """Round-to-nearest quantization of a 2-D weight (computed in float32)."""
    if weight.dim() != 2:
        raise BadInputError(f"expected a 2-D weight, got shape {tuple(weight.shape)}",
                            "E_QUANT_SHAPE")
    rows, cols = weight.shape
    width = _group_width(cols, group_size)
    w = weight.detach().to(torch.float32).reshape(rows * (cols // width), width)
    scale, zp = compute_qparams(w, bits, symmetric)
    q = quantize_values(w, scale, zp, bits)
    n_groups = cols // width
    return QuantizedWeight(
        q=q.to(torch.int8).reshape(rows, cols).contiguous(),
        scale=scale.reshape(rows, n_groups).contiguous(),
        zero_point=None if zp is None else zp.to(torch.int8).reshape(rows, n_groups).contiguous(),
        bits=bits, group_size=group_size)


def fake_quantize(weight: torch.Tensor, bits: int, group_size: int | None,
                  symmetric: bool) -> torch.Tensor:
    """Quantize then dequantize (float32), e.g. for error measurements."""
    return quantize_rtn(weight, bits, group_size, symmetric).dequantize()
