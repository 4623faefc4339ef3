"""``--quant-plan`` / ``QuantConfig(plan_from=...)``: calibrate once, encode the same plan again.

A reused plan must give the same bytes as the export that calibrated it, must be refused (before
any slow work, nothing written) when it belongs to another checkpoint or cannot run on the
target, and cannot be combined with options that would change it."""
from __future__ import annotations

import shutil

import pytest

from slmpack import api
from slmpack.config import ExportConfig
from slmpack.errors import BadInputError, UnsupportedError
from slmpack.package import plan_sidecar
from slmpack.quantize_config import QuantConfig
from tests.quant.conftest import write_quant_model

FAST = QuantConfig(recipe="int4", calib_windows=4, calib_window_tokens=64, algorithm="gptq")
NOVAL = ExportConfig(validate=False)


@pytest.fixture(scope="module")
def calibrated(quant_model, tmp_path_factory):
    return api.export(quant_model, "onnx", tmp_path_factory.mktemp("reuse") / "first", config=NOVAL, quant=FAST)


def test_reused_plan_gives_identical_bytes(calibrated, quant_model, tmp_path):
    again = api.export(quant_model, "onnx", tmp_path / "again", config=NOVAL,
                       quant=QuantConfig(plan_from=calibrated.path))
    for f in ("model.onnx", "quant_recipe.json"):
        assert (again.path / f).read_bytes() == (calibrated.path / f).read_bytes(), f
    for f in ("quant_plan.safetensors", "quant_plan.json", "quant_recipe.json"):
        assert (plan_sidecar(again.path) / f).read_bytes() == (plan_sidecar(calibrated.path) / f).read_bytes(), f
    q = again.manifest["quantization"]
    assert q["calibration"]["reused_from"] == "first"
    assert q["calibration"]["windows"] == 4          # facts of the calibration that made the plan
    assert "reused_plan_s" in q["timings_s"] and "build_plan_s" not in q["timings_s"]
    assert q["readback_passed"] is True
    assert q["config"]["plan_from"] == "first"


def test_the_package_holds_no_plan_integers(calibrated):
    """What an app copies is the package; the plan is the sidecar beside it, matched by digest."""
    from slmpack.package import sha256_file

    side = plan_sidecar(calibrated.path)
    assert sorted(p.name for p in side.iterdir()) == ["quant_plan.json", "quant_plan.safetensors", "quant_recipe.json"]
    assert not any(p.name.startswith("quant_plan") for p in calibrated.path.iterdir())
    assert not any(f.startswith("quant_plan") for f in calibrated.manifest["files"])
    q = calibrated.manifest["quantization"]
    assert q["plan"] == "quant_plan.json" and q["plan_sha256"] == sha256_file(side / "quant_plan.json")
    plan = (side / "quant_plan.safetensors").stat().st_size
    assert plan > (calibrated.path / "model.onnx").stat().st_size / 2   # the integers the package no longer carries


@pytest.mark.parametrize("given", ["sidecar", "bare"])
def test_sidecar_or_bare_plan_folder_is_accepted(given, calibrated, quant_model, tmp_path):
    src = plan_sidecar(calibrated.path)
    if given == "bare":
        src = tmp_path / "plan"
        src.mkdir()
        for f in ("quant_plan.json", "quant_plan.safetensors"):
            shutil.copy(plan_sidecar(calibrated.path) / f, src / f)
    pkg = api.export(quant_model, "onnx", tmp_path / "out", config=NOVAL, quant=QuantConfig(plan_from=src))
    assert (pkg.path / "model.onnx").read_bytes() == (calibrated.path / "model.onnx").read_bytes()


def test_package_without_its_sidecar_or_with_another_plan(calibrated, quant_model, tmp_path):
    alone = tmp_path / "alone"
    shutil.copytree(calibrated.path, alone)
    with pytest.raises(BadInputError) as e:
        api.export(quant_model, "onnx", tmp_path / "o1", config=NOVAL, quant=QuantConfig(plan_from=alone))
    assert e.value.code == "E_QUANT_PLAN_MISSING" and "alone.plan" in e.value.message
    other = api.export(quant_model, "onnx", tmp_path / "other", config=NOVAL, quant=QuantConfig(recipe="int8"))
    shutil.copytree(plan_sidecar(other.path), plan_sidecar(alone))   # int8's plan beside the int4 package
    with pytest.raises(BadInputError) as e:
        api.export(quant_model, "onnx", tmp_path / "o2", config=NOVAL, quant=QuantConfig(plan_from=alone))
    assert e.value.code == "E_QUANT_PLAN_MISMATCH"
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_plan_of_another_checkpoint_is_refused(calibrated, tmp_path):
    other = write_quant_model(tmp_path / "other", seed=1)   # same shapes, other weights
    out = tmp_path / "out"
    with pytest.raises(BadInputError) as e:
        api.export(other, "onnx", out, config=NOVAL, quant=QuantConfig(plan_from=calibrated.path))
    assert e.value.code == "E_QUANT_PLAN_MISMATCH"
    assert e.value.details["plan_checkpoint"] != e.value.details["checkpoint"]
    assert not out.exists()


def test_plan_the_target_cannot_run_is_refused_before_work(calibrated, quant_model, tmp_path):
    from slmpack.targets.coreml.options import CoreMLOptions

    out = tmp_path / "out"
    with pytest.raises(UnsupportedError) as e:   # int4 needs iOS 18's constexpr_blockwise_shift_scale
        api.export(quant_model, "coreml", out, config=NOVAL, options=CoreMLOptions(deployment_target="ios17"),
                   quant=QuantConfig(plan_from=calibrated.path))
    assert e.value.code == "E_QUANT_PLAN_INVALID"
    assert "q_proj" in e.value.message
    assert not out.exists()


@pytest.mark.parametrize("extra", [{"recipe": "int8"}, {"algorithm": "awq"}, {"max_size_bytes": "1MB"}])
def test_plan_cannot_be_combined_with_other_decisions(tmp_path, extra):
    with pytest.raises(BadInputError) as e:
        QuantConfig(plan_from=tmp_path, **extra)
    assert e.value.code == "E_CONFIG"


def test_missing_or_corrupt_plan(calibrated, quant_model, tmp_path):
    with pytest.raises(BadInputError) as e:
        api.export(quant_model, "onnx", tmp_path / "o1", config=NOVAL, quant=QuantConfig(plan_from=tmp_path / "nope"))
    assert e.value.code == "E_QUANT_PLAN_MISSING"
    bad = tmp_path / "bad"
    shutil.copytree(calibrated.path, bad)
    shutil.copytree(plan_sidecar(calibrated.path), plan_sidecar(bad))
    blob = bytearray((plan_sidecar(bad) / "quant_plan.safetensors").read_bytes())
    blob[-1] ^= 1
    (plan_sidecar(bad) / "quant_plan.safetensors").write_bytes(bytes(blob))
    with pytest.raises(Exception) as e:
        api.export(quant_model, "onnx", tmp_path / "o2", config=NOVAL, quant=QuantConfig(plan_from=bad))
    assert getattr(e.value, "code", "").startswith("E_")   # typed (integrity) error, not a traceback
    assert not (tmp_path / "o2").exists()


def test_cli_exposes_quant_plan():
    from slmpack.cli import build_parser

    args = build_parser().parse_args(["export", "--quant-plan", "pkgdir"])
    from slmpack.cli import quant_config_from_args

    assert quant_config_from_args(args).plan_from.name == "pkgdir"


def test_target_all_calibrates_once(quant_model, tmp_path, monkeypatch):
    """`export --target all --quant ...`: the first target calibrates, every later one encodes
    that package's plan (same plan bytes, manifest says where it came from)."""
    import json

    from slmpack import cli
    from slmpack.targets import registry

    monkeypatch.setattr(registry, "available", lambda: ["onnx", "coreml"])   # two targets keep it fast
    out = tmp_path / "all"
    rc = cli.main(["export", str(quant_model), "--target", "all", "--out", str(out), "--quant", "int4",
                   "--calib-windows", "4", "--calib-window-tokens", "64", "--no-validate", "--json"])
    assert rc == 0
    first, second = (json.loads((out / t / "manifest.json").read_text()) for t in ("onnx", "coreml"))
    assert first["quantization"]["config"]["plan_from"] is None
    assert second["quantization"]["config"]["plan_from"] == "onnx"
    assert second["quantization"]["calibration"]["reused_from"] == "onnx"
    assert (out / "onnx.plan" / "quant_plan.safetensors").read_bytes() == \
        (out / "coreml.plan" / "quant_plan.safetensors").read_bytes()
    assert second["quantization"]["readback_passed"] is True
