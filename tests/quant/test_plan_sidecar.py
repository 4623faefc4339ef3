"""The plan sidecar ``<package>.plan``: staged and committed with its package, replaced with it,
never left behind by a failed or a float export, never served from the build cache without its
package's digest, and read by ``validate`` only when it is this package's plan."""
from __future__ import annotations

import shutil

import pytest

from slmpack import api
from slmpack.config import ExportConfig, ValidationConfig
from slmpack.errors import BadInputError, ValidationFailed
from slmpack.package import plan_sidecar, sidecar_matches
from slmpack.quantize_config import QuantConfig
from tests.build.helpers import build_json

NOVAL = ExportConfig(validate=False)
INT8 = QuantConfig(recipe="int8")


@pytest.fixture(scope="module")
def model(quant_model):
    return quant_model


def _leftovers(parent):
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_sidecar_is_committed_with_the_package_and_replaced_with_it(model, tmp_path):
    out = tmp_path / "pkg"
    pkg = api.export(model, "onnx", out, NOVAL, quant=INT8)
    assert sidecar_matches(pkg.path) and plan_sidecar(out).is_dir()
    first = (plan_sidecar(out) / "quant_plan.json").read_bytes()
    with pytest.raises(BadInputError) as e:               # no --force: neither is touched
        api.export(model, "onnx", out, NOVAL, quant=QuantConfig(recipe="int4"))
    assert e.value.code == "E_OUTPUT_EXISTS"
    api.export(model, "onnx", out, ExportConfig(validate=False, force=True), quant=QuantConfig(recipe="int4"))
    assert sidecar_matches(out) and (plan_sidecar(out) / "quant_plan.json").read_bytes() != first
    api.export(model, "onnx", out, ExportConfig(validate=False, force=True))    # fp32 over it: the old plan goes
    assert sidecar_matches(out) and not plan_sidecar(out).exists()
    assert _leftovers(tmp_path) == []


def test_a_sidecar_path_that_is_not_a_sidecar_is_refused(model, tmp_path):
    out = tmp_path / "pkg"
    plan_sidecar(out).mkdir()
    (plan_sidecar(out) / "notes.txt").write_text("mine")
    for force in (False, True):
        with pytest.raises(BadInputError) as e:
            api.export(model, "onnx", out, ExportConfig(validate=False, force=force), quant=INT8)
        assert e.value.code == "E_OUTPUT_EXISTS" and "sidecar" in e.value.message
    assert (plan_sidecar(out) / "notes.txt").read_text() == "mine" and not out.exists()


def test_a_failed_package_leaves_no_sidecar(model, tmp_path):
    """A ladder failure removes the package; its staged plan goes too (nothing at either path)."""
    cfg = ExportConfig(validation=ValidationConfig(heldout_tokens=64, greedy_tokens=4, max_ppl_loss=0.0))
    quant = QuantConfig(recipe="int4", calib_windows=4, calib_window_tokens=64)
    with pytest.raises(ValidationFailed) as e:      # the accuracy gate
        api.export(model, "onnx", tmp_path / "pkg", cfg, quant=quant)
    assert e.value.code == "E_ACCURACY_GATE"
    assert not (tmp_path / "pkg").exists() and not plan_sidecar(tmp_path / "pkg").exists()
    assert _leftovers(tmp_path) == []


def test_validate_reads_back_only_this_packages_plan(model, tmp_path):
    a = api.export(model, "onnx", tmp_path / "a", NOVAL, quant=INT8)
    b = api.export(model, "onnx", tmp_path / "b", NOVAL, quant=QuantConfig(recipe="int4"))
    assert api.validate(a.path)["readback"] == "passed"
    shutil.rmtree(plan_sidecar(a.path))
    assert api.validate(a.path)["readback"].startswith("skipped")   # an app's copy: nothing to compare
    shutil.copytree(plan_sidecar(b.path), plan_sidecar(a.path))    # another package's plan beside it
    v = api.validate(a.path)
    assert v["readback"] == "failed" and not v["passed"]


@pytest.mark.slow
def test_build_cache_stores_the_sidecar_and_publishes_it_out_of_the_app_tree(model, tmp_path):
    recipe = tmp_path / "slmpack.toml"
    recipe.write_text(f'out = "out"\ncache = "cache"\n[[package]]\nname = "q"\nmodel = "{model}"\n'
                      'targets = ["onnx"]\ncontext = 32\nquant = "int8"\nheldout_tokens = 32\ngreedy_tokens = 4\n')
    rc, first = build_json(recipe)
    assert rc == 0, first
    out = tmp_path / "out" / "q" / "onnx"
    published = tmp_path / "out" / ".slmpack-build" / "q" / "onnx.plan"   # hidden: not bundled into the app
    assert not plan_sidecar(out).exists() and (published / "quant_plan.json").is_file()
    root = tmp_path / "out"
    visible = [p.relative_to(root) for p in root.rglob("*") if not p.relative_to(root).parts[0].startswith(".")]
    assert visible and not any(p.name.endswith(".plan") or p.name.startswith("quant_plan") for p in visible)
    objects = tmp_path / "cache" / "objects"
    [obj] = [p for p in objects.iterdir() if not p.name.endswith(".plan")]
    assert sidecar_matches(obj)
    assert (published / "quant_plan.json").read_bytes() == (plan_sidecar(obj) / "quant_plan.json").read_bytes()
    shutil.rmtree(out)
    shutil.rmtree(published)
    rc, second = build_json(recipe)               # both come back from the cache
    assert rc == 0 and second["packages"][0]["status"] == "from-cache" and (published / "quant_plan.json").is_file()
    (plan_sidecar(obj) / "quant_plan.json").write_text("{}")   # a cache object whose plan is not its own
    shutil.rmtree(out)
    rc, third = build_json(recipe)                # is never served: rebuilt
    assert rc == 0 and third["packages"][0]["status"] == "built" and sidecar_matches(obj)
