"""Exporting the same model twice gives byte-identical packages, for every target."""
from __future__ import annotations

import pytest

from slmpack import api
from slmpack.config import ExportConfig, TraceConfig
from slmpack.package import hash_tree
from tests.tiny_models import write_tiny_model

CFG = ExportConfig(trace=TraceConfig(max_context=64, max_prompt=32), validate=False)


def _options(target: str):
    from slmpack.targets.coreml.options import CoreMLOptions
    from slmpack.targets.executorch.options import ExecuTorchOptions
    from slmpack.targets.tflite.options import TFLiteOptions

    return {"onnx": None, "executorch": ExecuTorchOptions(bundled_program=True),   # model.pte + model.bpte
            "tflite": TFLiteOptions(prefill_lengths=(8, 32)),                    # + model.litertlm
            "coreml": CoreMLOptions(deployment_target="ios18", compute_precision="fp32")}[target]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("det") / "m", "llama", seed=3, vocab=4096, hidden=32, layers=1,
                            heads=4, varied=True, demo_tokenizer=True)


@pytest.mark.parametrize("target", ["onnx", "executorch", "tflite", "coreml"])
def test_two_exports_are_byte_identical(model, target, tmp_path):
    a = api.export(model, target, tmp_path / "a", CFG, _options(target))
    b = api.export(model, target, tmp_path / "b", CFG, _options(target))
    assert hash_tree(a.path) == hash_tree(b.path)
    assert (a.path / "manifest.json").read_bytes() == (b.path / "manifest.json").read_bytes()
    assert len(a.manifest["files"]) >= 3 and a.manifest["artifact"] in "".join(a.manifest["files"])
    if target == "executorch":
        assert {"model.pte", "model.bpte"} <= set(a.manifest["files"])
    if target == "tflite":
        assert b"creation_timestamp" in (a.path / "model.litertlm").read_bytes()   # present, but fixed
