"""GPTQ against a straightforward (unbatched, explicit inverse-Hessian OBS) reference."""
import numpy as np
import pytest
import torch

from slmpack.calibration.gptq import GPTQConfig, HessianAccumulator, gptq_quantize
from slmpack.calibration.rtn import quantize_rtn
from slmpack.errors import BadInputError


def correlated_inputs(n: int, k: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, k // 4, generator=g)
    mix = torch.randn(k // 4, k, generator=g)
    return z @ mix + 0.1 * torch.randn(n, k, generator=g)


def _params(x: np.ndarray, bits: int, sym: bool):
    if sym:
        qmax = 2 ** (bits - 1) - 1
        amax = np.abs(x).max(axis=1)
        s = np.where(amax > 0, amax / qmax, 1.0)
        return s.astype(np.float32).astype(np.float64), None
    lo, hi = np.minimum(x.min(axis=1), 0), np.maximum(x.max(axis=1), 0)
    s = np.where(hi > lo, (hi - lo) / (2 ** bits - 1), 1.0)
    zp = np.clip(np.round(-lo / s) - 2 ** (bits - 1), -2 ** (bits - 1), 2 ** (bits - 1) - 1)
    return s.astype(np.float32).astype(np.float64), zp


def reference_gptq(w, h, bits, group, sym, damp=0.01):
    """Frantar et al. 2022, Eq. (2)-(3): quantize column i, update the remaining weights with
    the OBS correction, eliminate i from the inverse Hessian. No Cholesky, no blocks."""
    w, h = w.astype(np.float64).copy(), h.astype(np.float64).copy()
    cols = w.shape[1]
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h += damp * np.mean(np.diag(h)) * np.eye(cols)
    hinv = np.linalg.inv(h)
    width = cols if group is None else group
    q = np.zeros_like(w)
    lo, hi = -2 ** (bits - 1), 2 ** (bits - 1) - 1
    for i in range(cols):
        if i % width == 0:
            s, zp = _params(w[:, i:i + width], bits, sym)
        z = 0 if zp is None else zp
        q[:, i] = np.clip(np.round(w[:, i] / s) + z, lo, hi)
        err = (w[:, i] - (q[:, i] - z) * s) / hinv[i, i]
        w -= np.outer(err, hinv[i, :])
        hinv -= np.outer(hinv[:, i], hinv[i, :]) / hinv[i, i]
    return q


def _hessian(x: torch.Tensor) -> torch.Tensor:
    acc = HessianAccumulator(x.shape[1])
    for chunk in x.split(50):
        acc.add(chunk)
    return acc.hessian()


@pytest.mark.parametrize("group,sym", [(None, True), (16, True), (16, False), (32, False)])
@pytest.mark.parametrize("block", [5, 16, 128])
def test_gptq_equals_straightforward_reference(group, sym, block):
    x = correlated_inputs(200, 64, seed=0)
    w = torch.randn(8, 64, generator=torch.Generator().manual_seed(1))
    h = _hessian(x)
    qw = gptq_quantize(w, h, bits=4, group_size=group, symmetric=sym,
                       config=GPTQConfig(block_size=block))
    ref = reference_gptq(w.numpy(), h.numpy(), 4, group, sym)
    np.testing.assert_array_equal(qw.q.numpy().astype(np.float64), ref)
    assert (qw.zero_point is None) == sym


def test_hessian_is_two_over_n_xtx():
    x = torch.randn(30, 8, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(_hessian(x), 2.0 / 30 * x.double().T @ x.double())


@pytest.mark.parametrize("bits,group,sym,act_order", [(4, 32, True, False), (4, None, True, False),
                                                      (4, 32, False, False), (8, None, True, False),
                                                      (4, 32, True, True), (4, None, False, True)])
def test_gptq_output_error_below_rtn_on_correlated_inputs(bits, group, sym, act_order):
    x = correlated_inputs(512, 128, seed=3)
    w = torch.randn(32, 128, generator=torch.Generator().manual_seed(4)) * 0.02
    qw = gptq_quantize(w, _hessian(x), bits=bits, group_size=group, symmetric=sym,
                       config=GPTQConfig(act_order=act_order))
    rtn = quantize_rtn(w, bits, group, sym)
    ref = x @ w.T
    err_gptq = float(((x @ qw.dequantize().T - ref) ** 2).mean())
    err_rtn = float(((x @ rtn.dequantize().T - ref) ** 2).mean())
    assert err_gptq < 0.7 * err_rtn, (err_gptq, err_rtn)
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    assert int(qw.q.min()) >= lo and int(qw.q.max()) <= hi


def test_act_order_uses_static_groups_from_original_weights():
    x = correlated_inputs(256, 64, seed=5)
    w = torch.randn(4, 64, generator=torch.Generator().manual_seed(6))
    qw = gptq_quantize(w, _hessian(x), bits=4, group_size=32, symmetric=True,
                       config=GPTQConfig(act_order=True))
    torch.testing.assert_close(qw.scale, quantize_rtn(w, 4, 32, True).scale, rtol=1e-6, atol=0)


def test_dead_input_columns_are_zeroed():
    x = correlated_inputs(100, 32, seed=7)
    x[:, 5] = 0.0
    w = torch.randn(4, 32, generator=torch.Generator().manual_seed(8))
    qw = gptq_quantize(w, _hessian(x), bits=4, group_size=None, symmetric=True)
    assert torch.all(qw.q[:, 5] == 0)


def test_errors_are_typed():
    with pytest.raises(BadInputError) as e:
        HessianAccumulator(4).hessian()
    assert e.value.code == "E_CALIB_EMPTY"
    with pytest.raises(BadInputError) as e:
        gptq_quantize(torch.zeros(2, 8), torch.eye(4), bits=4, group_size=None, symmetric=True)
    assert e.value.code == "E_QUANT_SHAPE"
    with pytest.raises(BadInputError) as e:
        GPTQConfig(block_size=0)
    assert e.value.details["field"] == "block_size"
