"""LoRA adapters (``--adapter``), merged into the base before calibration and tracing. The oracle
is PEFT's own ``merge_and_unload`` and transformers' ``generate`` on the merged model."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from slmpack import api
from slmpack.errors import BadInputError
from slmpack.exporter import lora
from tests.test_family_onnx import CFG, NEW, family_model_with_tokenizer, hf_greedy
from tests.tiny_models import write_tiny_model

LLAMA_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def make_adapter(base: Path, out: Path, *, r: int = 4, alpha: float = 8, rslora: bool = False,
                 modules=LLAMA_MODULES, seed: int = 1, **extra) -> Path:
    """A PEFT LoRA adapter with random (non-zero) A and B, saved the way PEFT saves it."""
    import peft
    import transformers as tf

    model = tf.AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    torch.manual_seed(seed)
    cfg = peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=list(modules), use_rslora=rslora,
                          init_lora_weights=False, lora_dropout=0.0, **extra)
    peft.get_peft_model(model, cfg).save_pretrained(out)
    return out


def peft_merged(base: Path, adapter: Path, into: Path) -> Path:
    """PEFT's merge_and_unload, saved as a checkpoint directory (with the base's tokenizer files)."""
    import peft
    import transformers as tf

    model = tf.AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    merged = peft.PeftModel.from_pretrained(model, adapter).merge_and_unload()
    merged.save_pretrained(into, safe_serialization=True)
    for f in base.iterdir():
        if f.name.startswith(("tokenizer", "generation_config")):
            shutil.copyfile(f, into / f.name)
    return into


def tiny(path: Path, family: str, hidden: int = 32) -> Path:
    """A random checkpoint with the demo tokenizer whose greedy decoding gives distinct tokens."""
    if family == "llama":
        return write_tiny_model(path, "llama", varied=True, demo_tokenizer=True, vocab=4096, tied=False,
                                hidden=hidden)
    return family_model_with_tokenizer(path, family)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return tiny(tmp_path_factory.mktemp("lora") / "base", "llama")


@pytest.mark.parametrize("family,kw", [
    ("llama", dict(r=4, alpha=8)),                                            # every projection
    ("llama", dict(r=8, alpha=16, rslora=True, modules=("q_proj", "v_proj"))),  # rsLoRA, a subset
    ("llama", dict(r=4, alpha=8, rank_pattern={"down_proj": 2})),             # per-module rank
    ("gpt2", dict(r=4, alpha=4, modules=("c_attn", "c_proj", "c_fc"), fan_in_fan_out=True)),  # Conv1D
])
def test_merge_equals_peft_merge_and_unload(tmp_path, family, kw):
    src = tiny(tmp_path / "base", family)
    adapter = make_adapter(src, tmp_path / "adapter", **kw)
    ours = lora.merge(load_file(src / "model.safetensors"), lora.read_adapter(adapter))
    theirs = load_file(peft_merged(src, adapter, tmp_path / "merged") / "model.safetensors")
    base_sd = load_file(src / "model.safetensors")
    changed = [k for k in base_sd if not torch.equal(base_sd[k], ours[k])]
    assert changed and all(k in theirs for k in changed)
    for k in theirs:
        torch.testing.assert_close(ours[k], theirs[k], rtol=0, atol=1e-6, msg=k)
    if kw.get("rslora"):
        assert lora.read_adapter(adapter).pairs[0].scale == pytest.approx(16 / 8 ** 0.5)


def _export_with_adapter(src, adapter, target, out):
    from slmpack.targets.coreml.options import CoreMLOptions

    # Core ML: fp32 compute, as the family tests (fp16 flips near-tied top-1s of these random weights)
    options = CoreMLOptions(deployment_target="ios18", compute_precision="fp32") if target == "coreml" else None
    return api.export(src, target, out, config=dataclasses.replace(CFG, adapter=adapter), options=options)


@pytest.mark.parametrize("target", ["onnx", pytest.param("executorch", marks=pytest.mark.slow),
                                    pytest.param("tflite", marks=pytest.mark.slow),
                                    pytest.param("coreml", marks=pytest.mark.slow)])
def test_merged_adapter_package_generates_peft_merged_tokens(tmp_path, base, target):
    import slmpack

    adapter = make_adapter(base, tmp_path / "adapter")
    pkg = _export_with_adapter(base, adapter, target, tmp_path / "pkg")
    m = pkg.manifest
    assert m["validation"]["passed"], m["validation"]
    assert m["source"]["adapter"]["sha256"] == lora.read_adapter(adapter).sha256
    prompt = [int(t) for t in load_file(str(pkg.path / "test_vectors.safetensors"))["greedy_prompt_ids"]]
    want = hf_greedy(peft_merged(base, adapter, tmp_path / "merged"), prompt, NEW)
    assert want != hf_greedy(base, prompt, NEW)        # the adapter changes what the model says
    assert list(slmpack.load(pkg.path).generate(prompt, NEW).ids) == want


def test_adapter_changes_the_source_digest(tmp_path, base):
    """A plan calibrated on the base is not reused for base + adapter (the digests differ)."""
    adapter = make_adapter(base, tmp_path / "adapter")
    cfg = dataclasses.replace(CFG, validate=False)
    plain = api.export(base, "onnx", tmp_path / "plain", config=cfg)
    merged = api.export(base, "onnx", tmp_path / "merged", config=dataclasses.replace(cfg, adapter=adapter))
    assert plain.manifest["source"]["checkpoint_sha256"] != merged.manifest["source"]["checkpoint_sha256"]
    assert "adapter" not in plain.manifest["source"]


def _dora(base, d):
    make_adapter(base, d, use_dora=True)


def _other_model(base, d):
    other = tiny(d.parent / "other", "llama", hidden=48)
    make_adapter(other, d)


def _pickle_only(base, d):
    make_adapter(base, d)
    (d / "adapter_model.safetensors").rename(d / "adapter_model.bin")


def _symlink_out(base, d):
    make_adapter(base, d)
    outside = d.parent / "outside.safetensors"
    (d / "adapter_model.safetensors").rename(outside)
    os.symlink(outside, d / "adapter_model.safetensors")


def _lora_bias(base, d):
    make_adapter(base, d)
    cfg = json.loads((d / "adapter_config.json").read_text())
    (d / "adapter_config.json").write_text(json.dumps({**cfg, "bias": "lora_only"}))


def _not_json(base, d):
    make_adapter(base, d)
    (d / "adapter_config.json").write_text("{nope")


@pytest.mark.parametrize("make,code", [(_dora, "E_ADAPTER_UNSUPPORTED"), (_other_model, "E_ADAPTER_MISMATCH"),
                                       (_pickle_only, "E_ADAPTER_MISSING"), (_symlink_out, "E_SYMLINK_REFUSED"),
                                       (_lora_bias, "E_ADAPTER_UNSUPPORTED"), (_not_json, "E_ADAPTER_INVALID")])
def test_bad_adapters_are_typed_errors_before_any_work(tmp_path, base, make, code):
    adapter = tmp_path / "adapter"
    make(base, adapter)
    out = tmp_path / "pkg"
    with pytest.raises(BadInputError) as e:
        _export_with_adapter(base, adapter, "onnx", out)
    assert e.value.code == code, e.value
    assert "\n" not in str(e.value) and not out.exists() and not list(tmp_path.glob(".pkg.*"))


def genai_greedy_with(pkg_path: Path, prompt: list[int], n: int, adapter_files: dict[str, Path], active: str | None):
    """onnxruntime-genai's greedy tokens with one of several loaded adapters active (None: the base)."""
    import numpy as np
    import onnxruntime_genai as og

    model = og.Model(str(pkg_path))
    adapters = og.Adapters(model)
    for name, f in adapter_files.items():
        adapters.load(str(f), name)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(prompt) + n, min_length=len(prompt) + n, do_sample=False)
    gen = og.Generator(model, params)
    if active is not None:
        gen.set_active_adapter(adapters, active)
    gen.append_tokens(np.asarray(prompt, dtype=np.int32))
    while not gen.is_done():
        gen.generate_next_token()
    return [int(t) for t in gen.get_sequence(0)][len(prompt):]


def test_separate_adapters_switch_at_runtime_in_onnxruntime_genai(tmp_path, base):
    """Two adapters exported separately over one base: the base graph is the same bytes, and
    onnxruntime-genai switching between them (or none) reproduces each PEFT-merged model."""
    from safetensors.numpy import load_file as load_np

    pkgs, adapters = {}, {}
    for name, seed in (("one", 1), ("two", 2)):
        adapters[name] = make_adapter(base, tmp_path / f"adapter-{name}", seed=seed)
        pkgs[name] = api.export(base, "onnx", tmp_path / f"pkg-{name}",
                                config=dataclasses.replace(CFG, adapter=adapters[name], adapter_mode="separate"))
        v = pkgs[name].manifest["validation"]
        assert v["passed"] and v["vectors"]["extra"]["adapters"]["adapter"]["passed"], v
    one, two = pkgs["one"].path, pkgs["two"].path
    assert (one / "model.onnx").read_bytes() == (two / "model.onnx").read_bytes()
    assert (one / "adapter.onnx_adapter").read_bytes() != (two / "adapter.onnx_adapter").read_bytes()
    prompt = [int(t) for t in load_np(str(one / "test_vectors.safetensors"))["greedy_prompt_ids"]]
    files = {n: pkgs[n].path / "adapter.onnx_adapter" for n in pkgs}
    plain = hf_greedy(base, prompt, NEW)
    assert genai_greedy_with(one, prompt, NEW, files, None) == plain
    seen = [plain]
    for n in pkgs:
        want = hf_greedy(peft_merged(base, adapters[n], tmp_path / f"merged-{n}"), prompt, NEW)
        assert want not in seen            # each adapter changes what the model says
        assert genai_greedy_with(one, prompt, NEW, files, n) == want, n
        seen.append(want)


@pytest.mark.parametrize("target", ["executorch", "tflite", "coreml"])
def test_separate_mode_is_refused_where_the_runtime_cannot_swap(tmp_path, base, target):
    adapter = make_adapter(base, tmp_path / "adapter")
    cfg = dataclasses.replace(CFG, adapter=adapter, adapter_mode="separate")
    with pytest.raises(Exception) as e:
        api.export(base, target, tmp_path / "pkg", config=cfg)
    assert e.value.code == "E_TARGET_UNSUPPORTED" and "adapter-mode merged" in str(e.value)
    assert not (tmp_path / "pkg").exists()
