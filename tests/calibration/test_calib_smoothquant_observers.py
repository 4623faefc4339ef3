"""SmoothQuant scales/folds and the static-activation range observers vs hand computations."""
import copy

import numpy as np
import pytest
import torch

from slmpack.calibration.build_plan import build_plan, fold_scales
from slmpack.calibration.observers import (MinMaxObserver, MSEObserver, PercentileObserver,
                                           activation_qparams, fake_quant_activation)
from slmpack.calibration.recipe import preset
from slmpack.calibration.smoothquant import ChannelAbsMax, smoothing_scales


def test_smoothing_scales_formula():
    act = torch.tensor([4.0, 1.0, 0.0, 9.0])
    w1 = torch.tensor([[1.0, -2.0, 3.0, 0.5], [0.25, 1.0, -1.0, 0.1]])
    w2 = torch.tensor([[-4.0, 0.5, 1.0, 0.25]])
    s = smoothing_scales(act, [w1, w2], alpha=0.5)
    wmax = np.array([4.0, 2.0, 3.0, 0.5])
    expected = np.sqrt([4.0, 1.0, 0.0, 9.0]) / np.sqrt(wmax)
    expected[2] = 1.0  # zero activation channel keeps s = 1
    np.testing.assert_allclose(s.numpy(), expected, rtol=1e-6)


def test_channel_absmax_tracks_running_max():
    obs = ChannelAbsMax(3)
    obs.observe(torch.tensor([[[1.0, -5.0, 2.0]]]))
    obs.observe(torch.tensor([[-3.0, 1.0, 0.5], [0.0, 0.0, -2.5]]))
    assert obs.value.tolist() == [3.0, 5.0, 2.5] and obs.rows == 3


def test_smoothquant_folds_leave_fp32_llama_unchanged_and_flatten_outliers(make_llama, windows):
    model = make_llama(kv_heads=2)
    ids = windows[:1]
    ref = model(ids)
    changed, folds = fold_scales(model, preset("w8a8"), windows)
    assert [f.method for f in folds] == ["smoothquant"] * 4
    assert {f.info["alpha"] for f in folds} == {0.5}
    folded = copy.deepcopy(model._hf[0])
    folded.load_state_dict({**folded.state_dict(), **changed})
    torch.testing.assert_close(folded(ids).logits, ref, atol=1e-5, rtol=1e-5)
    # after smoothing, per-channel activation maxima of q_proj's input are more uniform
    grab = {}
    def hook(_m, args):
        grab.setdefault(len(grab), args[0].abs().reshape(-1, 64).amax(0))
    for m in (model._hf[0], folded):
        h = m.model.layers[0].self_attn.q_proj.register_forward_pre_hook(hook)
        m(ids)
        h.remove()
    spread = [float(v.detach().max() / v.detach().mean()) for v in grab.values()]
    assert spread[1] < spread[0]


def test_w8a8_plan_has_static_scales_for_every_linear(make_llama, windows):
    model = make_llama(kv_heads=2)
    plan = build_plan(model, preset("w8a8"), windows)
    linears = [n for n, d in plan.decisions.items() if d.kind == "linear"]
    assert sorted(plan.activations) == sorted(linears) and len(linears) == 15
    # q_proj input range equals the min-max of the smoothed norm output, symmetric int8
    obs = MinMaxObserver()
    q = model.model.layers[1].self_attn.q_proj
    name = "model.layers.1.self_attn.q_proj.weight"
    hf = copy.deepcopy(model._hf[0])
    hf.load_state_dict(plan.fake_quant_state_dict(hf.state_dict()))
    h = hf.model.layers[1].self_attn.q_proj.register_forward_pre_hook(
        lambda _m, a: obs.observe(a[0]))
    for i in range(windows.shape[0]):
        hf(windows[i:i + 1])
    h.remove()
    assert q is not None and plan.activations[name].zero_point is None
    assert plan.activations[name].scale == pytest.approx(obs.qparams()[0], rel=1e-6)


def test_activation_qparams_symmetric_and_asymmetric():
    assert activation_qparams(-2.0, 1.27, True) == (pytest.approx(2.0 / 127), None)
    scale, zp = activation_qparams(0.0, 2.55, False)
    assert scale == pytest.approx(0.01) and zp == -128
    scale, zp = activation_qparams(-1.0, 1.55, False)
    assert scale == pytest.approx(0.01) and zp == -28  # unsigned 100, shifted by -128
    x = torch.tensor([-1.0, 0.0, 0.5, 1.55, 3.0])
    torch.testing.assert_close(fake_quant_activation(x, scale, zp),
                               torch.tensor([-1.0, 0.0, 0.5, 1.55, 1.55]), atol=1e-6, rtol=0)


def test_minmax_and_percentile_observers_vs_numpy():
    g = torch.Generator().manual_seed(0)
    chunks = [torch.randn(2, 16, 32, generator=g) for _ in range(3)]
    chunks[1][0, 0, 0] = 40.0  # one outlier
    mm, pc = MinMaxObserver(symmetric=False), PercentileObserver(99.0, symmetric=False)
    for c in chunks:
        mm.observe(c)
        pc.observe(c)
    allv = torch.cat([c.reshape(-1) for c in chunks]).numpy().astype(np.float64)
    assert mm.range() == (pytest.approx(allv.min()), pytest.approx(40.0))
    lo, hi = pc.range()
    assert lo == pytest.approx(np.quantile(allv, 0.01), rel=1e-6)
    assert hi == pytest.approx(np.quantile(allv, 0.99), rel=1e-6)
    assert hi < 5.0  # the outlier is clipped away


def test_mse_observer_matches_brute_force_and_beats_minmax_on_heavy_tails():
    g = torch.Generator().manual_seed(1)
    u = torch.rand(20000, generator=g, dtype=torch.float64) - 0.5
    x = (-torch.sign(u) * torch.log1p(-2 * u.abs())).to(torch.float32)  # Laplace(0, 1)
    mse, mm = MSEObserver(symmetric=True, grid=50), MinMaxObserver(symmetric=True)
    mse.observe(x)
    mm.observe(x)
    xv = x.numpy().astype(np.float64)
    amax = np.abs(xv).max()
    errs = []
    for k in range(1, 51):
        c = amax * k / 50
        sc = c / 127
        errs.append(np.mean((np.clip(np.round(xv / sc), -128, 127) * sc - xv) ** 2))
    best = amax * (int(np.argmin(errs)) + 1) / 50
    lo, hi = mse.range()
    assert hi == pytest.approx(best, rel=1e-6) and lo == pytest.approx(-best, rel=1e-6)
    assert hi < 0.95 * amax

    def err(obs):
        s, z = obs.qparams()
        return float(((fake_quant_activation(x, s, z) - x) ** 2).mean())
    assert err(mse) < 0.97 * err(mm)
