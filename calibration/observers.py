"""Range observers for static (per-tensor) int8 activation quantization.

* MinMax: the running minimum and maximum (Jacob et al. 2018, arXiv:1712.05877).
* Percentile: clip the range at the ``p``-th / ``(100-p)``-th percentile of observed values
  (e.g. NVIDIA TensorRT calibration; Wu et al. 2020, arXiv:2004.09602 §3.2).
* MSE: choose the clipping ratio of the min-max range that minimises the mean squared
  quantize-dequantize error over the observed values (Banner et al. 2019, arXiv:1810.05723; Wu
  et al. 2020 §3.2), searched on a grid.

Percentile and MSE need the value distribution; they keep a bounded, deterministic, strided
sample (``max_samples`` values) instead of every activation.

Activation quantization parameters follow the weight convention of :mod:`.rtn`: int8 signed
range [-128, 127]; symmetric has no zero point, asymmetric stores the zero point as a signed
offset (unsigned zero point - 128).
"""
from __future__ import annotations

import torch

from .rtn import qrange
from .schemes import ActivationScheme, Observer

_BITS = 8


def activation_qparams(lo: float, hi: float, symmetric: bool) -> tuple[float, int | None]:
    """(scale, zero point or None) for an int8 activation range ``[lo, hi]``."""
    qmin, qmax = qrange(_BITS)
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if symmetric:
        absmax = max(-lo, hi)
        return (absmax / qmax if absmax > 0 else 1.0), None
    if hi <= lo:
        return 1.0, 0
    scale = (hi - lo) / (qmax - qmin)
    zp = int(min(max(round(-lo / scale) + qmin, qmin), qmax))
    return scale, zp


def fake_quant_activation(x: torch.Tensor, scale: float, zp: int | None) -> torch.Tensor:
    qmin, qmax = qrange(_BITS)
    z = 0 if zp is None else zp
    return (torch.clamp(torch.round(x / scale) + z, qmin, qmax) - z) * scale


class MinMaxObserver:
    def __init__(self, symmetric: bool = True):
        self.symmetric = symmetric
        self.lo = float("inf")
        self.hi = float("-inf")

    def observe(self, x: torch.Tensor) -> None:
        x = x.detach()
        self.lo = min(self.lo, float(x.min()))
        self.hi = max(self.hi, float(x.max()))

    def range(self) -> tuple[float, float]:
        if self.lo > self.hi:
            raise ValueError("observer saw no values")
        return self.lo, self.hi

    def qparams(self) -> tuple[float, int | None]:
        return activation_qparams(*self.range(), self.symmetric)


class _SamplingObserver(MinMaxObserver):
    def __init__(self, symmetric: bool = True, max_samples: int = 1 << 18):
        super().__init__(symmetric)
        self.max_samples = max_samples
        self._chunks: list[torch.Tensor] = []
        self._count = 0

    def observe(self, x: torch.Tensor) -> None:
        super().observe(x)
        flat = x.detach().reshape(-1).to(torch.float32)
        stride = max(1, flat.numel() // self.max_samples)
        chunk = flat[::stride].clone()
        self._chunks.append(chunk)
        self._count += chunk.numel()
        if self._count > 2 * self.max_samples:
            self._compact()

    def _compact(self) -> None:
        allv = torch.cat(self._chunks)
        stride = max(1, allv.numel() // self.max_samples)
        self._chunks = [allv[::stride].clone()]
        self._count = self._chunks[0].numel()

    def samples(self) -> torch.Tensor:
        self._compact()
        return self._chunks[0]


class PercentileObserver(_SamplingObserver):
    def __init__(self, percentile: float = 99.99, symmetric: bool = True,
                 max_samples: int = 1 << 18):
        super().__init__(symmetric, max_samples)
        self.percentile = percentile

    def range(self) -> tuple[float, float]:
        super().range()
        v = self.samples().to(torch.float64)
        p = self.percentile / 100.0
        if self.symmetric:
            a = float(torch.quantile(v.abs(), p))
            return -a, a
        return float(torch.quantile(v, 1.0 - p)), float(torch.quantile(v, p))


class MSEObserver(_SamplingObserver):
    def __init__(self, symmetric: bool = True, grid: int = 100, max_samples: int = 1 << 18):
        super().__init__(symmetric, max_samples)
        self.grid = grid

    def range(self) -> tuple[float, float]:
        lo, hi = super().range()
        if self.symmetric:
            lo, hi = -max(-lo, hi), max(-lo, hi)
        v = self.samples().to(torch.float64)
        best, best_range = float("inf"), (lo, hi)
        for k in range(1, self.grid + 1):
            r = k / self.grid
            cand = (lo * r, hi * r)
            scale, zp = activation_qparams(*cand, self.symmetric)
            err = float(torch.mean((fake_quant_activation(v, scale, zp) - v) ** 2))
            if err < best:  # strict: ties keep the smaller ratio found first
                best, best_range = err, cand
        return best_range


def make_observer(scheme: ActivationScheme) -> MinMaxObserver:
    if scheme.observer is Observer.MINMAX:
        return MinMaxObserver(scheme.symmetric)
    if scheme.observer is Observer.PERCENTILE:
        return PercentileObserver(scheme.percentile, scheme.symmetric)
    return MSEObserver(scheme.symmetric)
