"""Schemes validation, recipe matching (first match wins), presets, JSON/TOML recipe files."""
import pytest

from slmpack.calibration.recipe import PRESETS, Recipe, Rule, load_recipe, preset
from slmpack.calibration.schemes import (ActivationMode, ActivationScheme, Algorithm, Observer,
                                         WeightScheme)
from slmpack.errors import BadInputError

NAMES = ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
         "model.layers.0.mlp.down_proj.weight", "model.layers.11.self_attn.v_proj.weight",
         "lm_head.weight"]


@pytest.mark.parametrize("kwargs,field", [
    ({"bits": 3}, "bits"), ({"bits": True}, "bits"), ({"bits": 4, "group_size": 48}, "group_size"),
    ({"bits": 4, "group_size": 0}, "group_size"), ({"bits": 8, "symmetric": 1}, "symmetric"),
    ({"bits": 8, "algorithm": "smart"}, "algorithm")])
def test_weight_scheme_validation_names_field(kwargs, field):
    with pytest.raises(BadInputError) as e:
        WeightScheme(**kwargs)
    assert e.value.code == "E_QUANT_SCHEME" and e.value.details["field"] == field
    assert f"WeightScheme.{field}" in str(e.value)


def test_schemes_coerce_strings_and_label():
    s = WeightScheme(4, 32, False, "gptq")
    assert s.algorithm is Algorithm.GPTQ and s.label == "int4_g32_asym_gptq"
    a = ActivationScheme("static_int8", "mse")
    assert a.mode is ActivationMode.STATIC_INT8 and a.observer is Observer.MSE
    with pytest.raises(BadInputError) as e:
        ActivationScheme(smoothquant_alpha=0.5)
    assert e.value.details["field"] == "smoothquant_alpha"
    with pytest.raises(BadInputError) as e:
        ActivationScheme("static_int8", percentile=30)
    assert e.value.details["field"] == "percentile"


def test_first_match_wins():
    r = Recipe("r", (Rule("model.layers.0.*", None), Rule("*.q_proj.weight", WeightScheme(8)),
                     Rule("model.layers.*", WeightScheme(4, 32))))
    assert r.match("model.layers.0.self_attn.q_proj.weight")[0] == 0
    idx, rule = r.match("model.layers.11.self_attn.q_proj.weight")
    assert idx == 1 and rule.weight.bits == 8
    assert r.match("model.layers.1.mlp.up_proj.weight")[1].weight.bits == 4
    assert r.match("lm_head.weight") is None


def test_presets():
    def scheme(p, name):
        return PRESETS[p].match(name)[1]
    assert all(scheme("int8", n).weight == WeightScheme(8) for n in NAMES)
    assert scheme("int4", NAMES[0]).weight.bits == 8 and scheme("int4", NAMES[4]).weight.bits == 8
    assert scheme("int4", NAMES[2]).weight == WeightScheme(4, 32)
    assert scheme("8da4w", NAMES[3]).activation.mode is ActivationMode.DYNAMIC_INT8
    assert scheme("8da4w", NAMES[0]).activation.mode is ActivationMode.NONE
    assert scheme("w8a8", NAMES[1]).activation.smoothquant_alpha == 0.5
    assert scheme("w8a8", NAMES[2]).activation.smoothquant_alpha is None
    assert scheme("w8a8", NAMES[2]).activation.mode is ActivationMode.STATIC_INT8
    with pytest.raises(BadInputError) as e:
        preset("int2")
    assert e.value.code == "E_RECIPE_PRESET"


def test_load_toml_and_json_equivalent(tmp_path):
    (tmp_path / "r.toml").write_text(
        'name = "mine"\n'
        '[[rules]]\npattern = "lm_head.weight"\nweight = "float"\n'
        '[[rules]]\npattern = "model.layers.*"\n'
        'weight = { bits = 4, group_size = 64, symmetric = false, algorithm = "awq" }\n'
        'activation = { mode = "dynamic_int8" }\n'
        '[[rules]]\npattern = "*"\nweight = { bits = 8, group_size = 0 }\n')
    (tmp_path / "r.json").write_text(
        '{"name": "mine", "rules": [{"pattern": "lm_head.weight", "weight": null},'
        '{"pattern": "model.layers.*", "weight": {"bits": 4, "group_size": 64, '
        '"symmetric": false, "algorithm": "awq"}, "activation": {"mode": "dynamic_int8"}},'
        '{"pattern": "*", "weight": {"bits": 8}}]}')
    t, j = load_recipe(tmp_path / "r.toml"), load_recipe(tmp_path / "r.json")
    assert t == j and t.rules[0].weight is None and t.rules[2].weight == WeightScheme(8)
    assert t.rules[1].weight == WeightScheme(4, 64, False, Algorithm.AWQ)


@pytest.mark.parametrize("suffix,text,needle", [
    (".json", '{"rules": [\n  {"pattern": "*",\n   "weight": {bits: 4}}]}', "r.json:3:"),
    (".toml", 'name = "x"\n[[rules]]\npattern = "*"\nweight = {bits = }\n', "line 4"),
])
def test_parse_errors_name_the_line(tmp_path, suffix, text, needle):
    (tmp_path / f"r{suffix}").write_text(text)
    with pytest.raises(BadInputError) as e:
        load_recipe(tmp_path / f"r{suffix}")
    assert e.value.code == "E_RECIPE_PARSE" and needle in str(e.value)


@pytest.mark.parametrize("rule2,needle", [
    ('{"pattern": "b", "weight": {"bits": 5}}', "WeightScheme.bits"),
    ('{"pattern": "b", "weight": {"bits": 4, "group": 32}}', "unknown key(s) in 'weight': group"),
    ('{"pattern": "b"}', "needs 'pattern' and 'weight'"),
    ('{"pattern": "b", "weight": {"group_size": 32}}', "bits"),
    ('{"pattern": "b", "weight": "float", "activation": {"mode": "int4"}}', "ActivationScheme.mode"),
])
def test_rule_errors_name_the_rule(tmp_path, rule2, needle):
    (tmp_path / "r.json").write_text(
        '{"rules": [{"pattern": "a", "weight": "float"}, ' + rule2 + "]}")
    with pytest.raises(BadInputError) as e:
        load_recipe(tmp_path / "r.json")
    assert e.value.code == "E_RECIPE_RULE"
    assert "r.json: rule 2 (pattern 'b')" in str(e.value) and needle in str(e.value)


def test_missing_and_bad_suffix(tmp_path):
    with pytest.raises(BadInputError) as e:
        load_recipe(tmp_path / "nope.toml")
    assert e.value.code == "E_RECIPE_MISSING"
    (tmp_path / "r.yaml").write_text("rules: []")
    with pytest.raises(BadInputError) as e:
        load_recipe(tmp_path / "r.yaml")
    assert e.value.code == "E_RECIPE_PARSE"


def test_fallback_applies_only_where_the_group_does_not_divide(tmp_path):
    """The int4 presets keep a 40-column weight int8 per-channel (llama.cpp's rule); a 64-column
    one gets g32; a rule without a fallback leaves the misfit for plan validation to refuse."""
    from slmpack.calibration.plan import resolve_plan

    shapes = {"model.layers.0.mlp.down_proj.weight": (32, 40), "model.layers.0.mlp.up_proj.weight": (40, 64)}
    for name in ("int4", "8da4w"):
        d = resolve_plan(preset(name), shapes).decisions
        assert d["model.layers.0.mlp.down_proj.weight"].weight == WeightScheme(8), name
        assert d["model.layers.0.mlp.up_proj.weight"].weight == WeightScheme(4, 32), name
    bare = resolve_plan(Recipe("r", (Rule("*", WeightScheme(4, 32)),)), shapes).decisions
    assert bare["model.layers.0.mlp.down_proj.weight"].weight == WeightScheme(4, 32)
    p = tmp_path / "r.toml"
    p.write_text('[[rules]]\npattern = "*"\nweight = { bits = 4, group_size = 32 }\nfallback = { bits = 8 }\n')
    assert load_recipe(p).rules[0].fallback == WeightScheme(8)
    assert load_recipe(p).rules[0].to_dict()["fallback"]["bits"] == 8
    with pytest.raises(BadInputError) as e:
        Rule("*", WeightScheme(4, 32), fallback=WeightScheme(4, 16))
    assert e.value.details["field"] == "fallback"
