"""The pipeline refuses plans it cannot honour before any weights are read or calibration runs."""
from __future__ import annotations

import pytest

from slmpack import api
from slmpack.cli import main
from slmpack.errors import BadInputError, UnsupportedError
from slmpack.quantize_config import QuantConfig, parse_percent, parse_size


@pytest.fixture
def no_slow_work(monkeypatch):
    """Any checkpoint read, calibration-data read or calibration fails the test."""
    calls = []

    def boom(what):
        def f(*a, **k):
            calls.append(what)
            raise AssertionError(f"{what} ran before the plan was validated")
        return f

    import slmpack.calibration.build_plan as bp
    import slmpack.exporter.stages as pl
    import slmpack.exporter.quantize_stage as qs

    monkeypatch.setattr(pl, "load_state_dict", boom("checkpoint load"))
    monkeypatch.setattr(qs, "load_windows", boom("calibration data"))
    monkeypatch.setattr(bp, "build_plan", boom("build_plan"))
    return calls


def _recipe(tmp_path, body: str):
    p = tmp_path / "r.toml"
    p.write_text(body)
    return str(p)


def test_invalid_group_size_fails_before_calibration_naming_tensors(quant_model, tmp_path, no_slow_work):
    rec = _recipe(tmp_path, '[[rules]]\npattern = "model.layers.*"\nweight = { bits = 4, group_size = 128 }\n')
    with pytest.raises(UnsupportedError) as e:
        api.export(quant_model, "onnx", tmp_path / "out", quant=rec)
    assert e.value.code == "E_QUANT_PLAN_INVALID"
    assert "model.layers.0.self_attn.q_proj.weight" in e.value.details["tensors"]
    assert "group size 128 does not divide" in str(e.value)
    assert no_slow_work == [] and not (tmp_path / "out").exists()


def test_target_without_quant_capabilities_is_refused_up_front(quant_model, tmp_path, no_slow_work, monkeypatch):
    from slmpack.targets.base import Capabilities
    from slmpack.targets.onnx.target import OnnxTarget

    monkeypatch.setattr(OnnxTarget, "capabilities", lambda self, o: Capabilities(precisions=("fp32",), quant=None))
    with pytest.raises(UnsupportedError) as e:
        api.export(quant_model, "onnx", tmp_path / "out", quant="int8")
    assert e.value.code == "E_QUANT_TARGET_UNSUPPORTED" and "lm_head.weight" in e.value.details["tensors"]
    assert no_slow_work == []


def test_target_capabilities_are_enforced(quant_model, tmp_path, no_slow_work, monkeypatch):
    from slmpack.calibration.plan import TargetQuantCapabilities
    from slmpack.targets.base import Capabilities
    from slmpack.targets.onnx.target import OnnxTarget

    monkeypatch.setattr(OnnxTarget, "capabilities", lambda self, o: Capabilities(
        precisions=("fp32",), quant=TargetQuantCapabilities(name="onnx", weight_bits=frozenset({8}))))
    with pytest.raises(UnsupportedError) as e:
        api.export(quant_model, "onnx", tmp_path / "out", quant="int4")
    assert e.value.code == "E_QUANT_PLAN_INVALID"
    assert "cannot run int4 linear weights" in str(e.value)
    assert no_slow_work == []


def test_onnx_refuses_asymmetric_dynamic_activations(quant_model, tmp_path, no_slow_work):
    rec = _recipe(tmp_path, '[[rules]]\npattern = "model.layers.*"\nweight = { bits = 4, group_size = 32 }\n'
                            'activation = { mode = "dynamic_int8", symmetric = false }\n')
    with pytest.raises(UnsupportedError) as e:
        api.export(quant_model, "onnx", tmp_path / "out", quant=rec)
    assert e.value.code == "E_TARGET_UNSUPPORTED" and "symmetric" in str(e.value)
    assert no_slow_work == []


def test_mixed_precision_with_static_activations_is_refused(quant_model, tmp_path, no_slow_work):
    with pytest.raises(UnsupportedError) as e:
        api.export(quant_model, "onnx", tmp_path / "out",
                   quant=QuantConfig(recipe="w8a8", max_ppl_increase_pct="2%"))
    assert e.value.code == "E_QUANT_MIXED_UNSUPPORTED"
    assert no_slow_work == []


def test_gptq_on_embeddings_is_avoided_by_the_algorithm_override(quant_model):
    from slmpack.exporter.quantize_stage import load_base_recipe, model_layout, resolve_and_check, with_algorithm
    from slmpack.exporter.spec import load_spec
    from slmpack.calibration.plan import TargetQuantCapabilities

    layout = model_layout(load_spec(quant_model))
    r = with_algorithm(load_base_recipe("int8"), "gptq", layout)
    plan = resolve_and_check(r, layout, TargetQuantCapabilities(), "onnx")
    assert plan.decisions["model.embed_tokens.weight"].weight.algorithm.value == "rtn"
    assert plan.decisions["lm_head.weight"].weight.algorithm.value == "rtn"  # tied to the embedding
    assert plan.decisions["model.layers.0.mlp.up_proj.weight"].weight.algorithm.value == "gptq"


@pytest.mark.parametrize("argv, code", [
    (["--quant", "int4", "--max-size", "1MB", "--max-ppl-increase", "2%"], "E_CONFIG"),
    (["--quant", "int5"], "E_CONFIG"),
    (["--quant", "int4", "--max-size", "lots"], "E_CONFIG"),
    (["--quant", "missing.toml"], "E_RECIPE_MISSING"),
])
def test_cli_quant_errors(quant_model, tmp_path, argv, code, capsys):
    rc = main(["export", str(quant_model), "--out", str(tmp_path / "o"), *argv])
    assert rc == 2
    assert f"error[{code}]" in capsys.readouterr().err


def test_budget_parsing():
    assert parse_percent("2%") == 2.0 and parse_percent("0.5") == 0.5
    assert parse_size("8MB") == 8_000_000 and parse_size("6MiB") == 6 * 2 ** 20 and parse_size("1200") == 1200
    with pytest.raises(BadInputError):
        QuantConfig(recipe="int4", calib_windows=0)
    assert not QuantConfig().enabled and QuantConfig(max_size_bytes="3MB").base_recipe == "int4"


def test_cli_builds_the_quant_config():
    from slmpack.cli import build_parser, quant_config_from_args

    args = build_parser().parse_args(["export", "m", "--quant", "int4", "--calib-data", "c.jsonl",
                                      "--calib-windows", "8", "--calib-seed", "3", "--algorithm", "gptq",
                                      "--max-ppl-increase", "2%"])
    q = quant_config_from_args(args)
    assert (q.recipe, q.calib_windows, q.calib_seed, q.algorithm, q.max_ppl_increase_pct) == ("int4", 8, 3, "gptq", 2.0)
    assert q.resolved_format() == "jsonl"
    assert not quant_config_from_args(build_parser().parse_args(["export"])).enabled
