"""The spine's acceptance on the bundled demo model: ONNX package, ladder, onnxruntime-genai."""
from __future__ import annotations

import json

import numpy as np
import onnx
from safetensors.numpy import load_file

from slmpack import api


def test_demo_package_passes_the_ladder(demo_onnx_package):
    pkg = demo_onnx_package
    v = pkg.validation
    assert v["passed"], v
    assert v["heldout"]["top1_agreement"] == 1.0
    assert v["heldout"]["tokens"] >= 512
    assert v["greedy"]["match"] and v["greedy"]["tokens"] == 32
    assert v["vectors"]["prefill_max_abs_diff"] < 1e-4
    # the held-out perplexity is that of a trained model on English text, not of random weights
    assert v["heldout"]["perplexity_reference"] < 200, v["heldout"]


def test_manifest_contents(demo_onnx_package):
    m = json.loads((demo_onnx_package.path / "manifest.json").read_text())
    assert m["schema_version"] == 1 and m["target"] == "onnx" and m["artifact"] == "model.onnx"
    assert len(m["source"]["checkpoint_sha256"]) == 64
    assert m["kv_cache"]["layout"] == "io_concat"
    assert [i["name"] for i in m["io"]["inputs"]][:3] == ["input_ids", "attention_mask", "position_ids"]
    assert m["io"]["outputs"][1]["name"] == "present.0.key"
    for tool in ("torch", "onnx", "onnxruntime"):
        assert m["toolchain"][tool] != "absent"
    assert set(m["files"]) >= {"model.onnx", "genai_config.json", "tokenizer.json", "test_vectors.safetensors"}
    onnx.checker.check_model(str(demo_onnx_package.path / "model.onnx"), full_check=True)


def test_onnxruntime_genai_generates_reference_tokens(demo_onnx_package):
    """An unmodified real client (onnxruntime-genai) reproduces our reference greedy tokens."""
    import onnxruntime_genai as og

    path = str(demo_onnx_package.path)
    vectors = load_file(str(demo_onnx_package.path / "test_vectors.safetensors"))
    model = og.Model(path)
    tokenizer = og.Tokenizer(model)
    prompt = np.asarray(tokenizer.encode("Return the"), dtype=np.int32)
    assert prompt.tolist() == vectors["greedy_prompt_ids"].tolist()  # genai's tokenizer agrees with ours
    params = og.GeneratorParams(model)
    want = vectors["greedy_ids"].tolist()
    params.set_search_options(max_length=len(prompt) + len(want), do_sample=False)
    gen = og.Generator(model, params)
    gen.append_tokens(prompt)
    while not gen.is_done():
        gen.generate_next_token()
    got = [int(t) for t in gen.get_sequence(0)][len(prompt):]
    assert got == want
    text = tokenizer.decode(np.asarray(got, dtype=np.int32))
    assert len(text.split()) >= 5  # readable words, not byte soup


def test_validate_and_verify_commands(demo_onnx_package):
    res = api.validate(demo_onnx_package.path)
    assert res["passed"] and res["greedy"]["match"]
    assert api.verify(demo_onnx_package.path)["ok"]


def test_external_data_package(tmp_path):
    """Past the threshold the weights live in model.onnx.data: hashed in the manifest, validated
    by ORT, run by onnxruntime-genai, and written byte-identically twice."""
    import onnxruntime_genai as og

    from slmpack.config import ExportConfig, ValidationConfig
    from slmpack.targets.onnx.options import OnnxOptions

    cfg = ExportConfig(validation=ValidationConfig(heldout_tokens=256, greedy_tokens=8))
    opts = OnnxOptions(external_data_threshold_bytes=0)
    pkg = api.export(None, "onnx", tmp_path / "a", config=cfg, options=opts)
    assert pkg.manifest["validation"]["passed"]
    assert "model.onnx.data" in pkg.manifest["files"]
    assert (pkg.path / "model.onnx").stat().st_size < 100_000 < (pkg.path / "model.onnx.data").stat().st_size
    vectors = load_file(str(pkg.path / "test_vectors.safetensors"))
    model = og.Model(str(pkg.path))
    params = og.GeneratorParams(model)
    prompt, want = vectors["greedy_prompt_ids"].astype(np.int32), vectors["greedy_ids"].tolist()
    params.set_search_options(max_length=len(prompt) + len(want), do_sample=False)
    gen = og.Generator(model, params)
    gen.append_tokens(prompt)
    while not gen.is_done():
        gen.generate_next_token()
    assert [int(t) for t in gen.get_sequence(0)][len(prompt):] == want
    again = api.export(None, "onnx", tmp_path / "b", config=ExportConfig(validate=False), options=opts)
    for f in ("model.onnx", "model.onnx.data"):
        assert (again.path / f).read_bytes() == (pkg.path / f).read_bytes(), f


def test_external_data_option_is_validated():
    import pytest

    from slmpack.errors import BadInputError
    from slmpack.targets.onnx.options import OnnxOptions

    for bad in (-1, 3 << 30, 1.5, True):
        with pytest.raises(BadInputError):
            OnnxOptions(external_data_threshold_bytes=bad)
