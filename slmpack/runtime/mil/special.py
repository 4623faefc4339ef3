"""Vectorized erf in float64 for the interpreter's ``gelu`` (EXACT mode); numpy has no erf and the
runtime kit is numpy-only (``math.erf`` per element was over half of an encoder's interpreter time; this is ~3x faster).

W. J. Cody, "Rational Chebyshev approximations for the error function", Math. Comp. 23 (1969),
631-637, as in netlib's SPECFUN ``CALERF``: three intervals of |x| (<= 0.46875, <= 4, > 4), each a
rational function; erfc's exp(-x^2) is split as exp(-t^2) exp(-(x-t)(x+t)), t = trunc(16x)/16, to
keep its argument exact. Double-precision accurate (tested against ``math.erf``).
"""
from __future__ import annotations

import numpy as np

_A = (3.16112374387056560e00, 1.13864154151050156e02, 3.77485237685302021e02, 3.20937758913846947e03,
      1.85777706184603153e-1)
_B = (2.36012909523441209e01, 2.44024637934444173e02, 1.28261652607737228e03, 2.84423683343917062e03)
_C = (5.64188496988670089e-1, 8.88314979438837594e00, 6.61191906371416295e01, 2.98635138197400131e02,
      8.81952221241769090e02, 1.71204761263407058e03, 2.05107837782607147e03, 1.23033935479799725e03,
      2.15311535474403846e-8)
_D = (1.57449261107098347e01, 1.17693950891312499e02, 5.37181101862009858e02, 1.62138957456669019e03,
      3.29079923573345963e03, 4.36261909014324716e03, 3.43936767414372164e03, 1.23033935480374942e03)
_P = (3.05326634961232344e-1, 3.60344899949804439e-1, 1.25781726111229246e-1, 1.60837851487422766e-2,
      6.58749161529837803e-4, 1.63153871373020978e-2)
_Q = (2.56852019228982242e00, 1.87295284992346047e00, 5.27905102951428412e-1, 6.05183413124413191e-2,
      2.33520497626869185e-3)
_SQRPI = 5.6418958354775628695e-1      # 1 / sqrt(pi)
_XBIG = 26.543                         # erfc(x) underflows past this


def _ratio(z, num, den, n):
    """Cody's Horner form: (((num[-1] z + num[0]) z + ...) + num[n]) / ((z + den[0]) z ... + den[n])."""
    xnum, xden = num[-1] * z, z
    for i in range(n):
        xnum, xden = (xnum + num[i]) * z, (xden + den[i]) * z
    return (xnum + num[n]) / (xden + den[n])


def _scaled_exp(y):
    """exp(-y^2), with the square split so its argument is exact for the leading part."""
    t = np.trunc(16.0 * y) / 16.0
    return np.exp(-t * t) * np.exp(-(y - t) * (y + t))


def _erf_block(x: np.ndarray) -> np.ndarray:
    y = np.abs(x)
    out = np.empty_like(x)
    small, mid = y <= 0.46875, (y > 0.46875) & (y <= 4.0)
    big = ~(small | mid)
    ys = y[small]
    out[small] = x[small] * _ratio(ys * ys, _A, _B, 3)
    ym = y[mid]
    out[mid] = np.copysign(1.0 - _scaled_exp(ym) * _ratio(ym, _C, _D, 7), x[mid])
    yb = np.minimum(y[big], _XBIG)
    z = 1.0 / (yb * yb)
    tail = np.where(y[big] < _XBIG, _scaled_exp(yb) * (_SQRPI - z * _ratio(z, _P, _Q, 4)) / yb, 0.0)
    out[big] = np.copysign(1.0 - tail, x[big])
    return out


BLOCK = 1 << 15   # elements per pass: the temporaries stay in cache (3x faster than whole-array passes)


def erf(x) -> np.ndarray:
    """erf of every element, in float64, same shape as ``x``."""
    x = np.asarray(x, np.float64)
    flat = x.reshape(-1)
    out = np.empty_like(flat)
    for start in range(0, flat.size, BLOCK):
        out[start:start + BLOCK] = _erf_block(flat[start:start + BLOCK])
    return out.reshape(x.shape)
