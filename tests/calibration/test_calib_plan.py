"""QuantPlan: persistence (deterministic bytes, round trip, integrity), validation, summary."""
import json

import pytest
import torch

from slmpack.calibration.build_plan import build_plan, resolve_model_plan
from slmpack.calibration.plan import TargetQuantCapabilities, resolve_plan
from slmpack.calibration.plan_io import PLAN_JSON, PLAN_TENSORS
from slmpack.calibration.recipe import Recipe, Rule, preset
from slmpack.calibration.schemes import (ActivationMode, ActivationScheme, Algorithm,
                                         WeightScheme)
from slmpack.errors import BadInputError, PackageIntegrityError, UnsupportedError

SHAPES = {"model.embed_tokens.weight": (128, 64),
          "model.layers.0.self_attn.q_proj.weight": (64, 64),
          "model.layers.0.mlp.down_proj.weight": (64, 96),
          "model.layers.0.mlp.up_proj.weight": (96, 64),
          "lm_head.weight": (128, 64)}
EMB = ["model.embed_tokens.weight"]


def _asym_recipe():
    return Recipe("mixed", (
        Rule("model.embed_tokens.weight", WeightScheme(8)),
        Rule("lm_head.weight", WeightScheme(8), ActivationScheme(ActivationMode.DYNAMIC_INT8)),
        Rule("*.q_proj.weight", WeightScheme(4, 32, False, Algorithm.GPTQ),
             ActivationScheme(ActivationMode.STATIC_INT8, symmetric=False)),
        Rule("model.layers.*", WeightScheme(4, 32, True))))


def test_save_load_is_byte_identical_and_round_trips(make_llama, windows, tmp_path):
    model = make_llama(tie=True, kv_heads=2)
    plan = build_plan(model, _asym_recipe(), windows)
    plan.save(tmp_path / "a")
    loaded = type(plan).load(tmp_path / "a")
    loaded.save(tmp_path / "b")
    for f in (PLAN_JSON, PLAN_TENSORS):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    assert loaded.decisions == plan.decisions and loaded.folds == () == plan.folds
    assert loaded.activations == plan.activations and len(plan.activations) == 2
    for name in plan.quantized_names():
        assert torch.equal(loaded.dequantized(name), plan.dequantized(name))
    q = "model.layers.0.self_attn.q_proj.weight"
    assert loaded.weights[q].zero_point.dtype == torch.int8
    assert loaded.weights[q].q.dtype == torch.int8
    assert -8 <= int(loaded.weights[q].q.min()) and int(loaded.weights[q].q.max()) <= 7
    assert loaded.weights[q].scale.shape == (64, 2) and loaded.weights[q].scale.dtype == torch.float32
    doc = json.loads((tmp_path / "a" / PLAN_JSON).read_text())
    assert doc["schema_version"] == 1 and len(doc["tensors_sha256"]) == 64
    assert list(doc) == sorted(doc) and str(tmp_path) not in (tmp_path / "a" / PLAN_JSON).read_text()


def test_ties_are_stored_once(make_llama, windows):
    model = make_llama(tie=True, kv_heads=2)
    recipe = Recipe("t", (Rule("*", WeightScheme(8)),))
    plan = build_plan(model, recipe, windows)
    assert plan.decisions["lm_head.weight"].tied_to == "model.embed_tokens.weight"
    assert "lm_head.weight" not in plan.weights and "model.embed_tokens.weight" in plan.weights
    assert torch.equal(plan.dequantized("lm_head.weight"),
                       plan.dequantized("model.embed_tokens.weight"))
    s = plan.summary()
    assert s["tied_tensors"] == 1 and s["quantized_tensors"] == 16
    # 128x64 embedding counted once + 2 layers of q,o (64x64) + k,v (32x64, GQA) + 3 x 64x128
    assert s["quantized_params"] == 128 * 64 + 2 * (2 * 64 * 64 + 2 * 32 * 64 + 3 * 64 * 128)


def test_fake_quant_state_dict_matches_dequantized(make_llama, windows):
    model = make_llama()
    plan = build_plan(model, preset("int4"), windows)
    sd = model.state_dict()
    fq = plan.fake_quant_state_dict(sd)
    name = "model.layers.1.mlp.up_proj.weight"
    assert torch.equal(fq[name], plan.dequantized(name))
    assert not torch.equal(fq[name], sd[name])
    norm = "model.layers.0.input_layernorm.weight"
    assert fq[norm] is sd[norm]


def test_summary_bits_per_weight():
    plan = resolve_plan(preset("int4"), SHAPES, embeddings=EMB)
    s = plan.summary()
    assert s["by_weight_scheme"] == {"int4_g32_sym_rtn": 3, "int8_pc_sym_rtn": 2}
    # int8 per-channel: 1 byte/weight + 4 bytes per row; int4 g32: 0.5 byte + 4 bytes per 32
    q8 = 2 * (128 * 64 + 4 * 128)
    q4 = sum(o * i // 2 + 4 * o * i // 32 for o, i in [(64, 64), (64, 96), (96, 64)])
    assert s["quantized_bytes"] == q8 + q4
    params = sum(o * i for o, i in SHAPES.values())
    assert s["quantized_params"] == params == 32768
    assert s["bits_per_weight"] == round(8 * (q8 + q4) / params, 4) == 6.75
    assert not plan.is_calibrated


def test_group_size_not_dividing_names_every_tensor():
    recipe = Recipe("g", (Rule("model.layers.*", WeightScheme(4, 64)),))
    plan = resolve_plan(recipe, SHAPES, embeddings=EMB)
    with pytest.raises(UnsupportedError) as e:
        plan.validate_against(SHAPES)
    assert e.value.code == "E_QUANT_PLAN_INVALID"
    assert list(e.value.details["tensors"]) == ["model.layers.0.mlp.down_proj.weight"]
    assert "group size 64 does not divide in_features 96" in str(e.value)


def test_target_capabilities_errors_name_every_offending_tensor():
    caps = TargetQuantCapabilities(name="tinyrt", weight_bits=frozenset({8}),
                                   group_sizes=frozenset({None}),
                                   activation_modes=frozenset({ActivationMode.NONE}))
    plan = resolve_plan(preset("8da4w"), SHAPES, embeddings=EMB)
    with pytest.raises(UnsupportedError) as e:
        plan.validate_against(SHAPES, caps)
    bad = e.value.details["tensors"]
    assert sorted(bad) == sorted(n for n in SHAPES if n not in EMB)
    for name in ("model.layers.0.self_attn.q_proj.weight", "lm_head.weight"):
        assert name in str(e.value)
    assert any("cannot run int4" in r for r in bad["model.layers.0.mlp.up_proj.weight"])
    assert any("dynamic_int8" in r for r in bad["lm_head.weight"])
    resolve_plan(preset("int8"), SHAPES, embeddings=EMB).validate_against(
        SHAPES, TargetQuantCapabilities(weight_bits=frozenset({8}),
                                        group_sizes=frozenset({None})))


def test_structural_errors_tie_embedding_awq_smoothquant():
    recipe = Recipe("bad", (
        Rule("model.embed_tokens.weight", WeightScheme(8, None, True, Algorithm.GPTQ)),
        Rule("lm_head.weight", WeightScheme(4, 32)),
        Rule("*.down_proj.weight", WeightScheme(8),
             ActivationScheme(ActivationMode.DYNAMIC_INT8, smoothquant_alpha=0.5)),
        Rule("*.up_proj.weight", WeightScheme(4, 32, True, Algorithm.AWQ))))
    shapes = {**SHAPES, "model.layers.0.mlp.gate_proj.weight": (96, 64)}
    plan = resolve_plan(recipe, shapes, embeddings=EMB,
                        ties={"lm_head.weight": "model.embed_tokens.weight"})
    with pytest.raises(UnsupportedError) as e:
        plan.validate_against({**shapes, "model.layers.0.self_attn.q_proj.weight": (32, 64)})
    bad = e.value.details["tensors"]
    assert sorted(bad) == ["lm_head.weight", "model.embed_tokens.weight",
                           "model.layers.0.mlp.down_proj.weight",
                           "model.layers.0.mlp.up_proj.weight",
                           "model.layers.0.self_attn.q_proj.weight"]
    assert "only RTN" in bad["model.embed_tokens.weight"][0]
    assert "shares storage" in bad["lm_head.weight"][0]
    assert "gate_proj" in bad["model.layers.0.mlp.up_proj.weight"][0]
    assert "RMSNorm" in bad["model.layers.0.mlp.down_proj.weight"][0]
    assert "!= model shape [32, 64]" in bad["model.layers.0.self_attn.q_proj.weight"][0]


def test_invalid_plan_fails_before_any_forward_pass(make_llama, windows):
    model = make_llama()
    calls = []
    model.register_forward_pre_hook(lambda *_: calls.append(1))
    recipe = Recipe("x", (Rule("model.layers.*", WeightScheme(4, 128, True, Algorithm.GPTQ)),))
    with pytest.raises(UnsupportedError) as e:
        build_plan(model, recipe, windows, progress=lambda *a: calls.append(a))
    assert calls == [] and len(e.value.details["tensors"]) == 12  # q,k,v,o,gate,up x 2 (in=64)
    assert resolve_model_plan(model, recipe).decisions["lm_head.weight"].weight is None


def test_load_detects_tampering_and_schema(make_llama, windows, tmp_path):
    plan = build_plan(make_llama(), preset("int8"), windows)
    plan.save(tmp_path)
    blob = bytearray((tmp_path / PLAN_TENSORS).read_bytes())
    blob[-1] ^= 1
    (tmp_path / PLAN_TENSORS).write_bytes(bytes(blob))
    with pytest.raises(PackageIntegrityError) as e:
        type(plan).load(tmp_path)
    assert e.value.code == "E_QUANT_PLAN_CORRUPT"
    doc = json.loads((tmp_path / PLAN_JSON).read_text())
    doc["schema_version"] = 99
    (tmp_path / PLAN_JSON).write_text(json.dumps(doc))
    with pytest.raises(BadInputError) as e:
        type(plan).load(tmp_path)
    assert e.value.code == "E_QUANT_PLAN_SCHEMA"
    with pytest.raises(BadInputError) as e:
        type(plan).load(tmp_path / "nope")
    assert e.value.code == "E_QUANT_PLAN_MISSING"


def test_dequantized_errors():
    plan = resolve_plan(preset("int4"), SHAPES, embeddings=EMB)
    with pytest.raises(BadInputError) as e:
        plan.dequantized("model.layers.0.mlp.up_proj.weight")
    assert e.value.code == "E_QUANT_PLAN_UNCALIBRATED"
    with pytest.raises(BadInputError) as e:
        plan.dequantized("nope.weight")
    assert e.value.code == "E_QUANT_PLAN_TENSOR"
