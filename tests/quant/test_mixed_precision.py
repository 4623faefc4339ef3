"""Sensitivity and the mixed-precision search on a tiny HF Llama behind the calibration contract."""
from __future__ import annotations

import pytest
import torch

from slmpack.calibration.mixed_precision import Budget, candidate_recipes, search
from slmpack.calibration.plan import resolve_plan
from slmpack.calibration.recipe import preset, recipe_from_dict
from slmpack.calibration.sensitivity import measure, logits_on, scheme_bytes, units
from slmpack.errors import UnsupportedError
from slmpack.exporter.quantize_stage import Layout
from tests.calibration.conftest import make_tiny_llama


@pytest.fixture(scope="module")
def setup():
    from slmpack.calibration.build_plan import model_weights

    torch.set_num_threads(1)
    model = make_tiny_llama(tie=True, kv_heads=2, layers=2, hidden=64, intermediate=128, vocab=128)
    with torch.no_grad():  # a scaled-up model so int4 noise is measurable
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(4.0)
    _, shapes, embeds, ties = model_weights(model)
    # text the model itself predicts (greedy), so fp32 perplexity is low and quantization shows
    windows = torch.randint(0, 128, (4, 32), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        for t in range(4, 32):
            windows[:, t] = torch.cat([model(windows[i:i + 1, :t])[:, -1] for i in range(4)]).argmax(-1)
    return model, Layout(dict(shapes), tuple(embeds), dict(ties)), windows


def test_units_group_layers_and_tied_embeddings(setup):
    _, layout, _ = setup
    us = units(layout.shapes, layout.embeddings, layout.ties)
    assert [u.name for u in us] == ["embeddings", "model.layers.0.self_attn", "model.layers.0.mlp",
                                    "model.layers.1.self_attn", "model.layers.1.mlp"]
    assert us[0].tensors == ("lm_head.weight", "model.embed_tokens.weight")
    assert len(us[1].tensors) == 4 and len(us[2].tensors) == 3


def test_ppl_budget_picks_a_plan_that_meets_it(setup):
    model, layout, windows = setup
    before = {n: p.clone() for n, p in model.named_parameters()}
    ref = logits_on(model, windows)
    int4 = resolve_plan(preset("int4"), layout.shapes, embeddings=layout.embeddings, ties=layout.ties)
    all4 = measure(model, windows, ref, {n: d.weight for n, d in int4.decisions.items()})
    assert all4["ppl_increase_pct"] > 0.5, all4
    budget = all4["ppl_increase_pct"] / 3
    recipe, rep = search(model, preset("int4"), windows, Budget(max_ppl_increase_pct=budget), layout)
    assert rep["met_on_calibration"] and rep["rtn_estimate"]["ppl_increase_pct"] <= budget
    assert rep["steps"], "an upgrade was needed"
    plan = resolve_plan(recipe, layout.shapes, embeddings=layout.embeddings, ties=layout.ties)
    plan.validate_against(layout.shapes)
    assert plan.decisions["lm_head.weight"].weight == plan.decisions["model.embed_tokens.weight"].weight
    assert recipe_from_dict(recipe.to_dict()).to_dict() == recipe.to_dict()  # saved recipes reload
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), f"{n} not restored"


def test_size_budget_fits_and_refuses_the_impossible(setup):
    model, layout, windows = setup
    int4 = resolve_plan(preset("int4"), layout.shapes, embeddings=layout.embeddings, ties=layout.ties)
    smallest = sum(scheme_bytes(d.shape, d.weight) for d in int4.decisions.values() if not d.tied_to)
    recipe, rep = search(model, preset("int4"), windows, Budget(max_size_bytes=smallest + 20_000), layout)
    assert rep["met_on_calibration"] and smallest <= rep["estimated_bytes"] <= smallest + 20_000
    assert any(u["level"] > 0 for u in rep["units"])  # the spare bytes bought precision somewhere
    with pytest.raises(UnsupportedError) as e:
        search(model, preset("int4"), windows, Budget(max_size_bytes=smallest - 1), layout)
    assert e.value.code == "E_QUANT_BUDGET"
    assert candidate_recipes(preset("8da4w"), layout)  # dynamic activations are allowed
