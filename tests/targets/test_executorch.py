"""ExecuTorch target: lowering, delegation report, runner + validation ladder, ExecuTorch's own
TextLLMRunner, BundledProgram, determinism, quantization encodings and preflight refusals.

Fast tests share one tiny package (random 1-layer Llama with the demo tokenizer, so
TextLLMRunner can run it); lowering through XNNPACK takes tens of seconds even for that, so
every other export is ``@pytest.mark.slow``, including the demo-model acceptance checks.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from slmpack import api
from slmpack.config import ExportConfig, TraceConfig, ValidationConfig
from slmpack.errors import BadInputError, UnsupportedError
from slmpack.bundled import demo_model_dir
from slmpack.exporter.reference_runner import greedy
from slmpack.exporter.spec import load_spec
from slmpack.targets import registry
from slmpack.targets.executorch.bundle import verify_bundle
from slmpack.targets.executorch.llm_runner import generate_subprocess, reference_pieces
from slmpack.targets.executorch.options import EtPrecision, ExecuTorchOptions, Sdpa
from tests.tiny_models import redraw

CTX, PROMPT = 64, 32
CFG = ExportConfig(trace=TraceConfig(max_context=CTX, max_prompt=PROMPT),
                   validation=ValidationConfig(heldout_tokens=128, greedy_tokens=16))
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "generation_config.json")


def write_model(path: Path, *, hidden: int = 64, inter: int = 128, layers: int = 1, seed: int = 0) -> Path:
    """Random tiny Llama with the demo tokenizer (vocab 4096, eos 0); linear input dims are
    multiples of 32 so int4 group-32 plans fit XNNPACK. Untied lm_head: with tied random
    embeddings greedy decoding sits on a fixed point (next token = current token)."""
    import transformers as tf

    cfg = tf.LlamaConfig(vocab_size=4096, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         tie_word_embeddings=False, bos_token_id=0, eos_token_id=0, rms_norm_eps=1e-5)
    torch.manual_seed(seed)
    model = tf.LlamaForCausalLM(cfg).eval()
    redraw(model, embed=lambda p: 0.5 * torch.randn_like(p))   # peaked logits: greedy tokens vary
    with torch.no_grad():
        # TextLLMRunner's python binding hands each decoded piece to the callback as str and raises
        # UnicodeDecodeError on a token that is a partial UTF-8 byte sequence; keep the random model
        # from ever predicting one (zero rows give logit 0, below the random maxima).
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(demo_model_dir() / "tokenizer.json"))
        partial = [i for i in range(4096) if "\ufffd" in tok.decode([i], skip_special_tokens=False)]
        model.lm_head.weight[partial] = 0.0
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    for name in TOKENIZER_FILES:
        shutil.copyfile(demo_model_dir() / name, path / name)
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return write_model(tmp_path_factory.mktemp("et") / "tiny")


@pytest.fixture(scope="module")
def tiny_pkg(tiny, tmp_path_factory):
    t0 = time.perf_counter()
    pkg = api.export(tiny, "executorch", tmp_path_factory.mktemp("etpkg") / "pkg", CFG,
                     options=ExecuTorchOptions(bundled_program=True))
    pkg.export_s = time.perf_counter() - t0
    return pkg


# ---- fast: options and preflight (no lowering) --------------------------------------------

def test_options_validate_and_name_the_field():
    with pytest.raises(BadInputError) as e:
        ExecuTorchOptions(precision="int3")
    assert e.value.details["field"] == "precision"
    with pytest.raises(BadInputError):
        ExecuTorchOptions(sdpa="flash")
    assert ExecuTorchOptions(precision="fp16").precision is EtPrecision.FP16


def test_cli_options_roundtrip():
    from slmpack.cli import build_parser
    from slmpack.targets.options import options_for

    args = build_parser().parse_args(["export", "--target", "executorch", "--et-precision", "fp16",
                                      "--et-sdpa", "decomposed", "--et-bundle"])
    assert options_for("executorch", args) == ExecuTorchOptions(precision="fp16", sdpa="decomposed",
                                                                bundled_program=True)
    assert "executorch" in registry.available()


def test_bf16_refused_before_slow_work(tiny, tmp_path, monkeypatch):
    import slmpack.exporter.stages as pipeline

    monkeypatch.setattr(pipeline, "build_reference", lambda *a, **k: pytest.fail("slow work started"))
    t0 = time.perf_counter()
    with pytest.raises(UnsupportedError) as e:
        api.export(tiny, "executorch", tmp_path / "out", CFG, options=ExecuTorchOptions(precision="bf16"))
    assert "bf16" in str(e.value) and time.perf_counter() - t0 < 10
    assert not (tmp_path / "out").exists()


def _recipe(weight, act=None):
    from slmpack.calibration.recipe import Recipe, Rule
    from slmpack.calibration.schemes import FLOAT_ACTIVATIONS

    return Recipe("t", (Rule("model.layers.*", weight, act or FLOAT_ACTIVATIONS),))


@pytest.mark.parametrize("preset, why", [("int4", "int4 weight-only"), ("w8a8", "static")])
def test_quant_presets_xnnpack_cannot_run_fail_before_calibration(tiny, tmp_path, monkeypatch, preset, why):
    import slmpack.exporter.stages as pipeline
    from slmpack.quantize_config import QuantConfig

    monkeypatch.setattr(pipeline, "build_reference", lambda *a, **k: pytest.fail("slow work started"))
    cfg = ExportConfig(trace=CFG.trace, quant=QuantConfig(recipe=preset))
    with pytest.raises(UnsupportedError) as e:
        api.export(tiny, "executorch", tmp_path / "out", cfg)
    assert why in str(e.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case, why", [
    ("int4_asym", "symmetric"), ("int8_g32", "int8 group-wise"), ("int4_g16", "cannot run group size 16"),
    ("fp16_with_plan", "fp32 activations")])
def test_quant_schemes_xnnpack_cannot_run_are_refused(tiny, case, why):
    from slmpack.calibration.build_plan import resolve_model_plan
    from slmpack.calibration.recipe import A8_DYNAMIC, W4_G32
    from slmpack.calibration.schemes import WeightScheme
    from slmpack.errors import UnsupportedError as Unsup
    from slmpack.exporter.reference import ReferenceModel

    weight, opts = {
        "int4_asym": (WeightScheme(bits=4, group_size=32, symmetric=False), ExecuTorchOptions()),
        "int8_g32": (WeightScheme(bits=8, group_size=32), ExecuTorchOptions()),
        "int4_g16": (WeightScheme(bits=4, group_size=16), ExecuTorchOptions()),
        "fp16_with_plan": (W4_G32, ExecuTorchOptions(precision="fp16")),
    }[case]
    spec = load_spec(tiny)
    with torch.device("meta"):
        ref = ReferenceModel(spec, CTX)
    plan = resolve_model_plan(ref, _recipe(weight, A8_DYNAMIC))
    target = registry.get("executorch")
    problems = [str(p) for p in target.preflight(spec, opts, plan)]
    try:   # the capability check the pipeline runs first (QuantPlan.validate_against)
        plan.validate_against({n: d.shape for n, d in plan.decisions.items()}, target.capabilities(opts).quant)
    except Unsup as e:
        problems.append(str(e))
    assert any(why in p for p in problems), problems


# ---- the shared tiny package -------------------------------------------------------------

def test_tiny_package_passes_the_ladder(tiny_pkg):
    v = tiny_pkg.validation
    assert tiny_pkg.passed, json.dumps({k: v[k] for k in ("structural", "vectors", "greedy")})[:2000]
    assert v["heldout"]["top1_agreement"] == 1.0 and v["greedy"]["match"]
    assert max(v["vectors"]["prefill_max_abs_diff"], v["vectors"]["decode_max_abs_diff"]) < 1e-4
    m = tiny_pkg.manifest
    assert m["artifact"] == "model.pte" and m["kv_cache"]["layout"] == "buffer"
    assert {"model.pte", "model.bpte", "tokenizer.json"} <= set(m["files"])
    assert m["io"]["constant_methods"]["get_max_seq_len"] == PROMPT
    assert m["io"]["constant_methods"]["get_max_context_len"] == CTX
    assert "llama::custom_sdpa.out" in m["runtime"]["operators"] and m["runtime"]["backends"] == ["XnnpackBackend"]


def test_delegation_report(tiny_pkg):
    rep = tiny_pkg.manifest["report"]["delegation"]
    assert rep["delegated_ops"]["aten.linear.default"] == 1 * 7 + 3 + 1   # layer linears + RMSNorm means + lm_head
    assert "aten.linear.default" not in rep["portable_ops"]
    assert rep["portable_ops"]["llama.custom_sdpa.default"] == 1
    assert tiny_pkg.manifest["report"]["attention_blocks_fused"] == "1/1"
    for point in ("prefill", "decode"):
        assert 0.5 < rep[point]["delegated_flop_share"] <= 1.0
    assert "FLOPs delegated" in tiny_pkg.manifest["report"]["summary"]


def test_runner_reset_really_resets(tiny_pkg):
    runner = registry.get("executorch").runner(tiny_pkg.path, tiny_pkg.manifest)
    ids = np.array([5, 17, 300, 2, 99], dtype=np.int64)
    first = runner.prefill(ids)
    runner.decode(7, 5)
    with pytest.raises(BadInputError):
        runner.decode(7, 9)                      # positions are checked, not silently accepted
    runner.reset()
    assert runner.pos == 0
    np.testing.assert_array_equal(runner.prefill(ids), first)


def test_text_llm_runner_generates_the_reference_tokens(tiny_pkg):
    """ExecuTorch's own TextLLMRunner (unmodified, python bindings) on model.pte + tokenizer.json."""
    g = tiny_pkg.manifest["validation"]["greedy"]
    prompt = tiny_pkg.manifest["test_vectors"]["prompt"]
    out = generate_subprocess(tiny_pkg.path / "model.pte", tiny_pkg.path / "tokenizer.json", prompt, g["tokens"])
    assert out["stats"]["prompt_tokens"] == 2
    assert out["pieces"] == reference_pieces(tiny_pkg.path / "tokenizer.json", g["reference_ids"])
    assert len(set(g["reference_ids"])) > 1      # a non-trivial continuation


def test_bundled_program_verifies(tiny_pkg):
    tol = tiny_pkg.manifest["tolerance"]
    assert verify_bundle(tiny_pkg.path / "model.bpte", atol=tol["atol"], rtol=tol["rtol"]) == 5


@pytest.mark.slow
def test_validate_command_in_a_fresh_process(tiny_pkg):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "slmpack.cli", "validate", str(tiny_pkg.path), "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["passed"]


# ---- slow: modes and the demo model ------------------------------------------------------

def _8da8w_recipe(tmp_path: Path) -> str:
    rule = {"weight": {"bits": 8, "group_size": None, "symmetric": True, "algorithm": "rtn"},
            "activation": {"mode": "dynamic_int8"}}
    path = tmp_path / "8da8w.json"
    path.write_text(json.dumps({"name": "8da8w", "rules": [{"pattern": "lm_head.weight", **rule},
                                                            {"pattern": "model.layers.*", **rule}]}))
    return str(path)


MODES = {  # name -> (options, recipe: None | preset | factory(tmp_path)); later modes drop in here
    "fp32-decomposed": (ExecuTorchOptions(sdpa=Sdpa.DECOMPOSED), None),
    "fp16": (ExecuTorchOptions(precision="fp16"), None),
    "8da4w": (ExecuTorchOptions(), "8da4w"),
    "8da8w": (ExecuTorchOptions(), _8da8w_recipe),
}


@pytest.mark.slow
@pytest.mark.parametrize("mode", sorted(MODES))
def test_modes(tiny, tmp_path, mode):
    """Every mode through the whole pipeline and its ladder (quantized: against the plan's
    fake-quant reference)."""
    from slmpack.quantize_config import QuantConfig

    options, recipe = MODES[mode]
    if callable(recipe):
        recipe = recipe(tmp_path)
    cfg = ExportConfig(trace=CFG.trace, validation=CFG.validation,
                       quant=QuantConfig(recipe=recipe, calib_windows=2, calib_window_tokens=32))
    pkg = api.export(tiny, "executorch", tmp_path / "pkg", cfg, options=options)
    assert pkg.passed, json.dumps(pkg.validation)[:3000]
    rep = pkg.manifest["report"]["delegation"]
    assert "aten.linear.default" not in rep["portable_ops"]
    if recipe is None:
        assert pkg.manifest["precision"] == options.precision.value
    else:
        assert pkg.manifest["report"]["quantization"]["encodings"]
        assert (pkg.path.with_name("pkg.plan") / "quant_plan.json").is_file()   # the plan sidecar
        rb = pkg.manifest["report"]["readback"]     # the plan's integers, found in model.pte
        assert rb["passed"] and rb["integers_identical"], rb["problems"]


@pytest.fixture(scope="module")
def demo_pkg(tmp_path_factory):
    t0 = time.perf_counter()
    pkg = api.export(None, "executorch", tmp_path_factory.mktemp("etdemo") / "executorch")
    pkg.export_s = time.perf_counter() - t0
    return pkg


@pytest.mark.slow
def test_demo_model_package_passes(demo_pkg):
    v = demo_pkg.validation
    assert demo_pkg.passed
    assert v["heldout"]["top1_agreement"] == 1.0 and v["greedy"]["match"] and v["greedy"]["tokens"] == 32
    rep = demo_pkg.manifest["report"]["delegation"]
    assert rep["prefill"]["delegated_flop_share"] >= 0.95
    # what XNNPACK does not run is attention over the cache (llama::custom_sdpa, ExecuTorch's kernel)
    by_op = rep["portable_flops_by_op"]
    assert max(by_op, key=by_op.get) == "llama.custom_sdpa.default"


def assert_text_llm_runner_reproduces(pkg):
    """ExecuTorch's own TextLLMRunner (fresh process) generates the reference's greedy pieces."""
    g = pkg.manifest["validation"]["greedy"]
    out = generate_subprocess(pkg.path / "model.pte", pkg.path / "tokenizer.json",
                              pkg.manifest["test_vectors"]["prompt"], g["tokens"])
    assert out["pieces"] == reference_pieces(pkg.path / "tokenizer.json", g["reference_ids"])


@pytest.mark.slow
def test_demo_model_text_llm_runner(demo_pkg):
    assert_text_llm_runner_reproduces(demo_pkg)


@pytest.mark.slow
def test_demo_greedy_through_our_runner_matches_vectors(demo_pkg):
    from safetensors.numpy import load_file

    vec = load_file(str(demo_pkg.path / "test_vectors.safetensors"))
    runner = registry.get("executorch").runner(demo_pkg.path, demo_pkg.manifest)
    got = greedy(runner, vec["greedy_prompt_ids"], len(vec["greedy_ids"]), (0,))
    assert got == [int(t) for t in vec["greedy_ids"]]
