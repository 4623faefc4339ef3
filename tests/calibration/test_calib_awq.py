"""AWQ: the folds keep the float model's function; the search beats RTN on outlier channels."""
import copy

import pytest
import torch

from slmpack.calibration.awq import AWQConfig, awq_fold_group, search_scales
from slmpack.calibration.build_plan import build_plan, fold_scales
from slmpack.calibration.layout import InputGroup
from slmpack.calibration.recipe import Recipe, Rule
from slmpack.calibration.rtn import fake_quantize
from slmpack.calibration.schemes import Algorithm, WeightScheme

W4_AWQ = WeightScheme(4, 32, True, Algorithm.AWQ)
AWQ_RECIPE = Recipe("awq", (Rule("model.layers.*", W4_AWQ),))


def outlier_inputs(n: int, k: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, k, generator=g)
    x[:, [3, 17, 40]] *= 25.0  # a few salient channels, as in LLM activations
    return x


def output_mse(x, w, wq):
    return float(((x @ w.T - x @ wq.T) ** 2).mean())


def test_search_beats_rtn_on_outlier_channels():
    x = outlier_inputs(256, 64, seed=0)
    w = torch.randn(48, 64, generator=torch.Generator().manual_seed(1)) * 0.05
    res = search_scales(x, [w], [W4_AWQ], n_grid=20)
    rtn = output_mse(x, w, fake_quantize(w, 4, 32, True))
    awq = output_mse(x, w, fake_quantize(w * res.scales, 4, 32, True) / res.scales)
    assert res.rtn_loss == pytest.approx(rtn, rel=1e-6)   # alpha = 0 is exactly RTN
    assert res.loss == pytest.approx(awq, rel=1e-6)
    assert res.alpha > 0 and awq < 0.7 * rtn, (awq, rtn)
    # held-out inputs from the same distribution benefit as well
    x2 = outlier_inputs(256, 64, seed=2)
    assert output_mse(x2, w, fake_quantize(w * res.scales, 4, 32, True) / res.scales) \
        < output_mse(x2, w, fake_quantize(w, 4, 32, True))


def test_scale_formula_matches_paper():
    x = outlier_inputs(64, 64, seed=3)
    w = torch.randn(8, 64, generator=torch.Generator().manual_seed(4))
    res = search_scales(x, [w], [W4_AWQ], n_grid=4)
    s = x.abs().mean(0).pow(res.alpha).clamp(min=1e-4)
    torch.testing.assert_close(res.scales, s / (s.max() * s.min()).sqrt())


def test_fold_into_norm_preserves_function():
    torch.manual_seed(5)
    norm = torch.nn.RMSNorm(64, elementwise_affine=True)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2.0)
    q, k = torch.nn.Linear(64, 32, bias=False), torch.nn.Linear(64, 16, bias=False)
    modules = {"n": norm, "q": q, "k": k}
    x = outlier_inputs(128, 64, seed=6)
    before = [q(norm(x)), k(norm(x))]
    rec = awq_fold_group(modules, InputGroup(("q", "k"), "n", "norm", 0), norm(x).detach(),
                         [W4_AWQ, W4_AWQ], AWQConfig(n_grid=10))
    assert rec.info["alpha"] > 0 and not torch.allclose(rec.scales, torch.ones(64))
    torch.testing.assert_close(q(norm(x)), before[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(k(norm(x)), before[1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kv_heads", [4, 2])  # MHA folds v->o too; GQA cannot
def test_awq_folds_leave_fp32_llama_unchanged(make_llama, windows, kv_heads):
    model = make_llama(kv_heads=kv_heads)
    ids = windows[:1]
    ref = model(ids)
    changed, folds = fold_scales(model, AWQ_RECIPE, windows)
    torch.testing.assert_close(model(ids), ref, atol=0, rtol=0)  # caller's model restored
    prevs = sorted({f.prev.rsplit(".", 1)[-1] for f in folds})
    expected = ["input_layernorm", "post_attention_layernorm", "up_proj"]
    assert prevs == sorted(expected + (["v_proj"] if kv_heads == 4 else []))
    assert len(folds) == 2 * len(expected) + (2 if kv_heads == 4 else 0)
    folded = copy.deepcopy(model._hf[0])
    folded.load_state_dict({**folded.state_dict(), **changed})
    assert not torch.equal(folded.model.layers[0].input_layernorm.weight,
                           model.model.layers[0].input_layernorm.weight)
    torch.testing.assert_close(folded(ids).logits, ref, atol=1e-5, rtol=1e-5)


def test_awq_plan_stores_scaled_weights_and_norm_overrides(make_llama, windows):
    model = make_llama(kv_heads=4)
    plan = build_plan(model, AWQ_RECIPE, windows)
    changed, _ = fold_scales(model, AWQ_RECIPE, windows)
    name = "model.layers.1.mlp.down_proj.weight"
    torch.testing.assert_close(plan.dequantized(name), fake_quantize(changed[name], 4, 32, True))
    assert "model.layers.0.input_layernorm.weight" in plan.float_overrides
    torch.testing.assert_close(plan.float_overrides["model.layers.0.input_layernorm.weight"],
                               changed["model.layers.0.input_layernorm.weight"])
    assert plan.calibration["awq"]["unscaled"] == []
    gqa = build_plan(make_llama(kv_heads=2), AWQ_RECIPE, windows)
    assert gqa.calibration["awq"]["unscaled"] == [
        f"model.layers.{i}.self_attn.o_proj.weight" for i in (0, 1)]
    # v_proj / up_proj are quantized: their folded rows live in the integer weights, not overrides
    assert not any("proj" in n for n in plan.float_overrides)
