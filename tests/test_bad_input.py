"""Each bad input gives a one-line typed error with a stable code and leaves nothing at the output."""
from __future__ import annotations

import json
import shutil

import pytest

from slmpack import api
from slmpack.errors import BadInputError, PackageIntegrityError, UnsupportedError


def _export(model, out, **kw):
    return api.export(model, "onnx", out, **kw)


def _assert_error(excinfo, code, out):
    assert excinfo.value.code == code
    assert "\n" not in str(excinfo.value)
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}.*"))  # no staging leftovers


def test_missing_directory(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(BadInputError) as e:
        _export(tmp_path / "nope", out)
    _assert_error(e, "E_MODEL_DIR_MISSING", out)


def _truncate(model):
    w = model / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])


def _garble_header(model):
    w = model / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[8:16] = b"garbage!"
    w.write_bytes(bytes(data))


def _add_a_layer(model):
    cfg = json.loads((model / "config.json").read_text())
    cfg["num_hidden_layers"] += 1
    (model / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("damage,code,named", [(_truncate, "E_WEIGHTS_CORRUPT", None),
                                               (_garble_header, "E_WEIGHTS_CORRUPT", None),
                                               (_add_a_layer, "E_WEIGHTS_MISMATCH", "model.layers.2")])
def test_damaged_checkpoint(tmp_path, tiny_llama, damage, code, named):
    model = tmp_path / "m"
    shutil.copytree(tiny_llama, model)
    damage(model)
    out = tmp_path / "out"
    with pytest.raises(BadInputError) as e:
        _export(model, out)
    _assert_error(e, code, out)
    assert named is None or named in str(e.value)


def test_unknown_architecture_lists_supported(tmp_path, tiny_llama):
    model = tmp_path / "m"
    shutil.copytree(tiny_llama, model)
    cfg = json.loads((model / "config.json").read_text())
    cfg["architectures"] = ["FalconForCausalLM"]
    cfg["auto_map"] = {"AutoModelForCausalLM": "evil.Model"}  # never honored
    (model / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "out"
    with pytest.raises(UnsupportedError) as e:
        _export(model, out)
    _assert_error(e, "E_ARCH_UNSUPPORTED", out)
    assert "LlamaForCausalLM" in str(e.value) and "Qwen2ForCausalLM" in str(e.value)


def test_pickle_refused_without_flag(tmp_path, tiny_llama):
    import torch
    from safetensors.torch import load_file

    model = tmp_path / "m"
    shutil.copytree(tiny_llama, model)
    sd = load_file(str(model / "model.safetensors"))
    (model / "model.safetensors").unlink()
    torch.save(sd, model / "pytorch_model.bin")
    out = tmp_path / "out"
    with pytest.raises(BadInputError) as e:
        _export(model, out)
    _assert_error(e, "E_PICKLE_REFUSED", out)


def test_existing_output_without_force(tmp_path, tiny_llama):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(BadInputError) as e:
        _export(tiny_llama, out)
    assert e.value.code == "E_OUTPUT_EXISTS"
    assert (out / "keep.txt").read_text() == "mine"  # untouched


def test_unwritable_output(tmp_path, tiny_llama):
    out = tmp_path / "no" / "such" / "parent" / "out"
    with pytest.raises(BadInputError) as e:
        _export(tiny_llama, out)
    assert e.value.code == "E_OUTPUT_UNWRITABLE"
    assert not out.exists()


def test_verify_names_changed_missing_and_extra(tmp_path, demo_onnx_package):
    pkg = tmp_path / "pkg"
    shutil.copytree(demo_onnx_package.path, pkg)
    (pkg / "genai_config.json").write_text("{}")
    (pkg / "tokenizer.json").unlink()
    (pkg / "stray.bin").write_bytes(b"x")
    with pytest.raises(PackageIntegrityError) as e:
        api.verify(pkg)
    d = e.value.details
    assert d["changed"] == ["genai_config.json"]
    assert d["missing"] == ["tokenizer.json"]
    assert d["extra"] == ["stray.bin"]
