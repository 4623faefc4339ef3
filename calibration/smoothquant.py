"""SmoothQuant: migrate activation outliers into the weights before W8A8 quantization.

Xiao, Lin, Seznec, Wu, Demouth, Han, "SmoothQuant: Accurate and Efficient Post-Training
Quantization for Large Language Models", ICML 2023, arXiv:2211.10438 (reference code:
mit-han-lab/smoothquant, ``smoothquant/smooth.py``).

For linears reading the same input ``X`` (per-channel absolute maxima ``max|X_j|`` over the
calibration set) the smoothing factor of input channel ``j`` is (paper Eq. 4)::

    s_j = max|X_j| ** alpha / max|W_j| ** (1 - alpha)

with ``max|W_j|`` taken over all output rows of all consumers, ``alpha`` the migration strength
(0.5 by default in the paper). ``X`` is divided by ``s`` (folded into the preceding RMSNorm
weight) and each consumer's weight column ``j`` is multiplied by ``s_j``; the float function is
unchanged. As in the reference, scales are clamped at 1e-5 and channels whose activation or
weight maximum is zero keep ``s_j = 1``.
"""
from __future__ import annotations

import torch

from slmpack.errors import BadInputError

from .layout import FoldRecord, InputGroup, apply_fold


class ChannelAbsMax:
    """Running per-channel ``max |x|`` over calibration inputs."""

    def __init__(self, channels: int):
        self.value = torch.zeros(channels, dtype=torch.float32)
        self.rows = 0

    def observe(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, self.value.shape[0]).abs().to(torch.float32)
        self.value = torch.maximum(self.value, x.amax(dim=0))
        self.rows += x.shape[0]


@torch.no_grad()
def smoothing_scales(act_absmax: torch.Tensor, weights: list[torch.Tensor],
                     alpha: float) -> torch.Tensor:
    """Per-input-channel smoothing factors ``s`` (float32 [in])."""
    w_absmax = torch.stack([w.detach().abs().to(torch.float32).amax(dim=0) for w in weights])
    w_absmax = w_absmax.amax(dim=0)
    a = act_absmax.to(torch.float32)
    s = (a.pow(alpha) / w_absmax.pow(1.0 - alpha)).clamp(min=1e-5)
    keep = (a == 0) | (w_absmax == 0) | ~torch.isfinite(s)
    return torch.where(keep, torch.ones_like(s), s)


@torch.no_grad()
def smooth_group(modules: dict[str, torch.nn.Module], group: InputGroup,
                 act_absmax: torch.Tensor, alpha: float) -> FoldRecord:
    """Compute smoothing scales for ``group`` and fold them into its RMSNorm in place."""
    if group.prev_kind != "norm" or group.prev is None:
        raise BadInputError(f"SmoothQuant needs a preceding norm to fold into; "
                            f"{', '.join(group.members)} has none", "E_QUANT_SMOOTHQUANT")
    s = smoothing_scales(act_absmax, [modules[m].weight for m in group.members], alpha)
    apply_fold(modules, group.prev, group.prev_kind, group.members, s)
    return FoldRecord("smoothquant", group.prev, group.prev_kind, group.members, s,
                      {"alpha": float(alpha)})
