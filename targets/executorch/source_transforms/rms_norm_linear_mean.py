"""Replace each RMSNorm by one whose mean over the hidden dim is a linear with weight ``1/D``.

XNNPACK delegates ``mean.dim`` only for 4-D inputs averaged over dims (2, 3) with keepdim
(``MeanDimConfig``), and the reshapes needed to get there carry a symbolic sequence length, which
XNNPACK's ``view_copy`` does not take (``ViewCopyConfig``). The reference RMSNorm averages a 3-D
``[B, S, D]`` tensor over its last dim, so it stayed on the portable kernels and cut every
decoder layer into several XNNPACK partitions. ``mean(x^2, -1) == linear(x^2, full(1/D))``
keeps the whole norm inside one partition (cost: 2*S*D extra FLOPs; the sum order differs from
``mean`` by float rounding only, exact when D is a power of two).
"""
from __future__ import annotations

import torch
from torch import nn

from slmpack.exporter.reference import RMSNorm


class RMSNormLinearMean(nn.Module):
    def __init__(self, norm: RMSNorm):
        super().__init__()
        self.weight, self.eps = norm.weight, norm.eps
        d = norm.weight.shape[0]
        self.register_buffer("mean_weight", torch.full((1, d), 1.0 / d, dtype=torch.float32), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        var = nn.functional.linear(x * x, self.mean_weight)
        return self.weight * (x * torch.rsqrt(var + self.eps)).to(dtype)


def replace_rms_norm(module: nn.Module) -> int:
    count = 0
    for name, child in list(module.named_children()):
        if isinstance(child, RMSNorm):
            setattr(module, name, RMSNormLinearMean(child))
            count += 1
        else:
            count += replace_rms_norm(child)
    return count
