"""AWQ: activation-aware weight quantization.

Lin, Tang, Tang, Yang, Dang, Gan, Han, "AWQ: Activation-aware Weight Quantization for LLM
Compression and Acceleration", MLSys 2024, arXiv:2306.00978 (reference code: mit-han-lab/llm-awq,
``awq/quantize/auto_scale.py``).

Salient weight channels are those that multiply large activations. For a group of linears that
read the same input ``X`` [n, in], AWQ scales input channel ``j`` by ``s_j`` before quantization,
``Q(W * s) (X / s)^T``, which shrinks the relative rounding error of salient channels. The search
(paper §3.2, Eq. 5) is over ``s = s_X ** alpha`` with ``s_X`` the mean absolute activation per
channel and ``alpha`` on the grid ``{0, 1/n_grid, ..., 1}``; as in the reference, ``s`` is
normalised by ``sqrt(max(s) * min(s))`` and clamped at 1e-4 first. The loss is the mean squared
error of the group's outputs ``X W^T`` vs ``X (Q(W*s)/s)^T`` over the calibration rows; ``alpha=0``
is plain RTN, so the chosen scales never do worse than RTN on the calibration data.

The chosen ``s`` is then folded (see :mod:`.layout`): consumer weight columns ``*= s`` and the
preceding op's output ``/= s`` (RMSNorm weight, or v_proj/up_proj rows), so the float model's
function is unchanged. The scaled weights are afterwards quantized with RTN. The reference's
optional weight-clipping search (``auto_clip``) is not implemented.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from slmpack.errors import BadInputError

from .layout import FoldRecord, InputGroup, apply_fold
from .rtn import fake_quantize
from .schemes import WeightScheme


@dataclass(frozen=True)
class AWQConfig:
    n_grid: int = 20
    max_rows: int = 4096  # calibration rows (tokens) used per group, strided deterministic subset

    def __post_init__(self) -> None:
        for field in ("n_grid", "max_rows"):
            v = getattr(self, field)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise BadInputError(f"AWQConfig.{field} must be a positive int, got {v!r}",
                                    "E_QUANT_SCHEME", details={"field": field})


@dataclass(frozen=True)
class AWQSearchResult:
    scales: torch.Tensor  # float32 [in]
    alpha: float
    loss: float           # output MSE with the chosen scales
    rtn_loss: float       # output MSE of plain RTN (alpha = 0)


def activation_magnitude(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute activation per input channel (llm-awq ``get_act_scale``)."""
    return x.reshape(-1, x.shape[-1]).abs().to(torch.float32).mean(dim=0)


def _group_loss(x: torch.Tensor, weights: list[torch.Tensor], refs: list[torch.Tensor],
                schemes: list[WeightScheme], s: torch.Tensor) -> float:
    total, count = 0.0, 0
    for w, ref, sch in zip(weights, refs, schemes):
        wq = fake_quantize(w * s[None, :], sch.bits, sch.group_size, sch.symmetric) / s[None, :]
        out = x @ wq.T
        total += float(((ref - out).to(torch.float64) ** 2).sum())
        count += ref.numel()
    return total / count


@torch.no_grad()
def search_scales(x: torch.Tensor, weights: list[torch.Tensor], schemes: list[WeightScheme],
                  n_grid: int = 20) -> AWQSearchResult:
    """Grid search of per-input-channel scales for linears sharing input ``x`` [n, in]."""
    x = x.reshape(-1, x.shape[-1]).to(torch.float32)
    weights = [w.detach().to(torch.float32) for w in weights]
    refs = [x @ w.T for w in weights]
    x_mag = activation_magnitude(x)
    best = None
    rtn_loss = float("nan")
    for k in range(n_grid + 1):
        alpha = k / n_grid
        s = x_mag.pow(alpha).clamp(min=1e-4)
        s = s / (s.max() * s.min()).sqrt()
        loss = _group_loss(x, weights, refs, schemes, s)
        if k == 0:
            rtn_loss = loss
        if best is None or loss < best[0]:
            best = (loss, alpha, s)
    loss, alpha, s = best
    return AWQSearchResult(scales=s.contiguous(), alpha=alpha, loss=loss, rtn_loss=rtn_loss)


def subsample_rows(x: torch.Tensor, max_rows: int) -> torch.Tensor:
    x = x.reshape(-1, x.shape[-1])
    stride = max(1, -(-x.shape[0] // max_rows))
    return x[::stride]


@torch.no_grad()
def awq_fold_group(modules: dict[str, torch.nn.Module], group: InputGroup, x: torch.Tensor,
                   schemes: list[WeightScheme], config: AWQConfig = AWQConfig()) -> FoldRecord:
    """Search scales for ``group`` on its input ``x`` and fold them into the model in place."""
    if group.prev is None or group.prev_kind is None:
        raise BadInputError(f"AWQ: no foldable predecessor for {', '.join(group.members)}",
                            "E_QUANT_AWQ_FOLD")
    x = subsample_rows(x, config.max_rows)
    res = search_scales(x, [modules[m].weight for m in group.members], schemes, config.n_grid)
    apply_fold(modules, group.prev, group.prev_kind, group.members, res.scales)
    return FoldRecord("awq", group.prev, group.prev_kind, group.members, res.scales,
                      {"alpha": res.alpha, "loss": res.loss, "rtn_loss": res.rtn_loss})
