"""The ladder's slack for dynamic int8 activations (``slmpack/runtime/activation_slack.py``): twice
the plan's own measured activation effect, stored beside the test vectors, applied by the export
ladder and by ``validate``; nothing for weight-only plans."""
from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import load_file

from slmpack import api
from slmpack.config import ExportConfig, ValidationConfig
from slmpack.quantize_config import QuantConfig
from slmpack.runtime import activation_slack as slack

CFG = ExportConfig(validation=ValidationConfig(heldout_tokens=64, greedy_tokens=4))


def test_slack_arithmetic():
    v = {"prefill_logits": np.array([[1.0, 2.0]]), "decode_logits": np.array([[0.0, 1.0]]),
         slack.FLOAT_ACT_PREFILL: np.array([[1.25, 2.0]]), slack.FLOAT_ACT_DECODE: np.array([[0.0, 0.5]]),
         slack.FLOAT_ACT_TOP1: np.array([0.9])}
    assert slack.vector_slack(v) == 2 * 0.5
    assert slack.top1_requirement(0.98, v) == pytest.approx(0.8)
    assert slack.top1_requirement(0.7, v) == 0.7                    # never above the declared requirement
    assert slack.top1_requirement(0.98, {**v, slack.FLOAT_ACT_TOP1: np.array([0.3])}) == 0.0
    plain = {"prefill_logits": v["prefill_logits"], "decode_logits": v["decode_logits"]}
    assert slack.vector_slack(plain) == 0.0 and slack.top1_requirement(0.98, plain) == 0.98


@pytest.fixture(scope="module")
def packages(quant_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("slack")
    q = dict(calib_windows=4, calib_window_tokens=64)
    return (api.export(quant_model, "onnx", root / "8da4w", CFG, quant=QuantConfig(recipe="8da4w", **q)),
            api.export(quant_model, "onnx", root / "int4", CFG, quant=QuantConfig(recipe="int4", **q)))


def test_dynamic_activation_package_carries_its_measured_slack(packages):
    dyn, _ = packages
    vec = load_file(str(dyn.path / "test_vectors.safetensors"))
    effect = max(np.abs(vec["prefill_logits"] - vec[slack.FLOAT_ACT_PREFILL]).max(),
                 np.abs(vec["decode_logits"] - vec[slack.FLOAT_ACT_DECODE]).max())
    assert effect > 0                                   # int8 activations do move the logits
    v = dyn.validation
    assert v["passed"] and v["vectors"]["activation_slack"] == pytest.approx(2 * effect, rel=1e-5)
    tol = dyn.manifest["tolerance"]
    assert v["vectors"]["bound"] == pytest.approx(tol["atol"] + tol["rtol"] * np.abs(vec["prefill_logits"]).max()
                                                  + 2 * effect, rel=1e-5)
    a = float(vec[slack.FLOAT_ACT_TOP1][0])
    assert 0 < a <= 1 and v["heldout"]["min_top1"] == pytest.approx(min(tol["min_top1"], 1 - 2 * (1 - a)), abs=1e-6)
    again = api.validate(dyn.path)                      # the package-only ladder applies the same slack
    assert again["passed"] and again["vectors"]["bound"] == pytest.approx(v["vectors"]["bound"], rel=1e-6)


def test_weight_only_package_has_no_slack(packages):
    _, wo = packages
    vec = load_file(str(wo.path / "test_vectors.safetensors"))
    assert not any(k in vec for k in (slack.FLOAT_ACT_PREFILL, slack.FLOAT_ACT_DECODE, slack.FLOAT_ACT_TOP1))
    assert "activation_slack" not in wo.validation["vectors"]
    assert wo.validation["heldout"]["min_top1"] == wo.manifest["tolerance"]["min_top1"]
