"""build_plan end to end on a tiny Llama: determinism, sequential GPTQ, restoring the model."""
import copy

import pytest
import torch

from slmpack.calibration.build_plan import build_plan, model_weights
from slmpack.calibration.datasets import CalibrationConfig, load_calibration_windows, load_tokenizer
from slmpack.calibration.evaluate import compare_logits
from slmpack.calibration.gptq import HessianAccumulator, gptq_quantize
from slmpack.calibration.plan_io import PLAN_JSON, PLAN_TENSORS
from slmpack.calibration.recipe import Recipe, Rule, preset
from slmpack.calibration.schemes import (ActivationMode, ActivationScheme, Algorithm, Observer,
                                         WeightScheme)
from slmpack.errors import BadInputError

GPTQ_RECIPE = Recipe("gptq", (Rule("model.embed_tokens.weight", WeightScheme(8)),
                              Rule("model.layers.*", WeightScheme(4, 32, True, Algorithm.GPTQ))))
MIXED = Recipe("mixed", (
    Rule("model.embed_tokens.weight", WeightScheme(8)),
    Rule("*.self_attn.[qkv]_proj.weight", WeightScheme(4, 32, True, Algorithm.AWQ)),
    Rule("*.mlp.*", WeightScheme(4, 32, False, Algorithm.GPTQ),
         ActivationScheme(ActivationMode.STATIC_INT8, Observer.PERCENTILE)),
    Rule("*", WeightScheme(8), ActivationScheme(ActivationMode.STATIC_INT8, Observer.MSE))))


def _fq_model(model, plan):
    hf = copy.deepcopy(model._hf[0])
    hf.load_state_dict(plan.fake_quant_state_dict(hf.state_dict()))
    return hf


def _seeded_windows(tokenizer_dir, text_path, seed):
    """Windows exactly as the CLI would get them: text -> tokens -> packed -> seeded sample."""
    tok, eos = load_tokenizer(tokenizer_dir)
    cfg = CalibrationConfig(text_path, window=32, num_windows=4, seed=seed)
    return load_calibration_windows(cfg, tok, eos)


def test_two_runs_give_identical_plan_bytes(make_llama, tokenizer_dir, tmp_path):
    text = tmp_path / "calib.txt"
    text.write_text(" ".join(f"w{(i * 7) % 50}" for i in range(400)) + "\nhello world")
    windows = _seeded_windows(tokenizer_dir, text, seed=11)
    model = make_llama(kv_heads=4)
    ref = model(windows[:1])
    modes = [m.training for m in model.modules()]
    seen = []
    a = build_plan(model, MIXED, windows, progress=lambda *args: seen.append(args))
    assert torch.equal(model(windows[:1]), ref)  # weights restored
    assert [m.training for m in model.modules()] == modes
    b = build_plan(make_llama(kv_heads=4), MIXED, _seeded_windows(tokenizer_dir, text, seed=11))
    a.save(tmp_path / "a")
    b.save(tmp_path / "b")
    for f in (PLAN_JSON, PLAN_TENSORS):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    assert len(a.folds) == 2 and len(a.activations) == 15 - 6  # q/k/v use float activations
    assert {s for s, _, _ in seen} >= {"awq layer 0", "quantize weights", "activation ranges"}
    c = build_plan(model, MIXED, _seeded_windows(tokenizer_dir, text, seed=12))
    assert c.calibration["windows_sha256"] != a.calibration["windows_sha256"]
    c.save(tmp_path / "c")
    assert (tmp_path / "c" / PLAN_TENSORS).read_bytes() != (tmp_path / "a" / PLAN_TENSORS).read_bytes()


def test_gptq_is_sequential_later_layers_see_quantized_earlier_layers(make_llama, windows):
    model = make_llama()
    plan = build_plan(model, GPTQ_RECIPE, windows)
    name = "model.layers.1.self_attn.o_proj"

    def hessian_of(hf):
        acc = HessianAccumulator(64)
        h = dict(hf.named_modules())[name].register_forward_pre_hook(lambda _m, a: acc.add(a[0]))
        for i in range(windows.shape[0]):
            hf(windows[i:i + 1])
        h.remove()
        return acc.hessian()

    w = dict(model.named_modules())[name].weight
    seq = gptq_quantize(w, hessian_of(_fq_model(model, plan)), bits=4, group_size=32,
                        symmetric=True)
    flt = gptq_quantize(w, hessian_of(model._hf[0]), bits=4, group_size=32, symmetric=True)
    assert torch.equal(plan.weights[f"{name}.weight"].q, seq.q)
    assert not torch.equal(seq.q, flt.q)


def test_quantized_models_stay_close_and_gptq_beats_rtn_on_layer_error(make_llama, windows):
    model = make_llama()
    ids = torch.randint(0, 128, (1, 48), generator=torch.Generator().manual_seed(9))
    ref = model(ids)
    results = {}
    for name in ("int8", "int4", "8da4w", "w8a8"):
        plan = build_plan(model, preset(name), windows)
        results[name] = compare_logits(ref, _fq_model(model, plan)(ids).logits, ids)
    assert results["int8"].kl < results["int4"].kl
    assert results["int8"].top1 >= 0.9 and results["int8"].kl < 1e-4
    rtn = build_plan(model, Recipe("r", (Rule("model.layers.*", WeightScheme(4, 32)),)), windows)
    gptq = build_plan(model, Recipe("g", GPTQ_RECIPE.rules[1:]), windows)
    xs = []  # down_proj's output error measured on its real calibration inputs
    h = model.model.layers[0].mlp.down_proj.register_forward_pre_hook(
        lambda _m, a: xs.append(a[0].detach().reshape(-1, 128)))
    for i in range(windows.shape[0]):
        model(windows[i:i + 1])
    h.remove()
    x = torch.cat(xs)
    w = model.model.layers[0].mlp.down_proj.weight.detach()
    n = "model.layers.0.mlp.down_proj.weight"
    err = {k: float(((x @ (p.dequantized(n) - w).T) ** 2).mean()) for k, p in
           (("rtn", rtn), ("gptq", gptq))}
    assert err["gptq"] < err["rtn"], err


def test_tied_model_quantizes_shared_weight_once(make_llama, windows):
    model = make_llama(tie=True, kv_heads=2)
    _, shapes, embeds, ties = model_weights(model)
    assert ties == {"lm_head.weight": "model.embed_tokens.weight"} and embeds == [
        "model.embed_tokens.weight"]
    plan = build_plan(model, preset("8da4w"), windows)
    assert plan.decisions["lm_head.weight"].activation.mode is ActivationMode.DYNAMIC_INT8
    assert plan.decisions["model.embed_tokens.weight"].activation.mode is ActivationMode.NONE
    fq = plan.fake_quant_state_dict(model.state_dict())
    assert torch.equal(fq["lm_head.weight"], fq["model.embed_tokens.weight"])
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tie untouched


def test_window_errors(make_llama):
    model = make_llama()
    with pytest.raises(BadInputError) as e:
        build_plan(model, GPTQ_RECIPE, torch.zeros(0, 16, dtype=torch.long))
    assert e.value.code == "E_CALIB_EMPTY"
    with pytest.raises(BadInputError) as e:
        build_plan(model, GPTQ_RECIPE, torch.zeros(2, 16))
    assert e.value.code == "E_CALIB_WINDOWS"
    # RTN-only recipes need no calibration data
    plan = build_plan(model, preset("int8"), torch.zeros(0, 16, dtype=torch.long))
    assert plan.is_calibrated and plan.calibration["num_windows"] == 0
