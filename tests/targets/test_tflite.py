"""LiteRT (TFLite) target: conversion, padding, verifier, Flex detection, ladder, LiteRT-LM, CLI.

Fast tests share one tiny package (random 2-layer Llama with the demo tokenizer, so the
LiteRT-LM bundle is built too); the demo-model acceptance export is ``@pytest.mark.slow``.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from slmpack import api
from slmpack.config import ExportConfig, TraceConfig
from slmpack.errors import BadInputError, UnsupportedError
from slmpack.exporter.checkpoint import load_state_dict
from slmpack.exporter.reference import build_reference
from slmpack.exporter.reference_runner import ReferenceRunner, greedy
from slmpack.exporter.spec import load_spec
from slmpack.targets.tflite import litertlm, ops
from slmpack.targets.tflite.module import LiteRTDecoder, sample_inputs
from slmpack.targets.tflite.options import TFLiteOptions, TFLitePrecision
from slmpack.targets.tflite.runner import TFLiteRunner, load_interpreter
from slmpack.targets.tflite.target import TFLiteTarget
from slmpack.runtime.tflite_verify import ArtifactInvalid, verify_bytes
from tests.tiny_models import write_tiny_model

CTX, PROMPT, LENGTHS = 48, 16, (4, 16)
CFG = ExportConfig(trace=TraceConfig(max_context=CTX, max_prompt=PROMPT))
OPTS = TFLiteOptions(prefill_lengths=LENGTHS)


def assert_close(got, want) -> None:
    """The target's fp32 tolerance: atol 1e-4 + rtol 1e-4 * max|want| (logits here reach ~15)."""
    got, want = np.asarray(got), np.asarray(want)
    assert np.abs(got - want).max() <= 1e-4 + 1e-4 * np.abs(want).max()


@pytest.fixture(scope="module")
def tok_model(tmp_path_factory) -> Path:
    """Random tiny Llama whose vocabulary is the demo tokenizer's (4096), eos = 0."""
    # varied: a continuation of distinct tokens with top-1 margins >= 0.03 (a discriminating check)
    return write_tiny_model(tmp_path_factory.mktemp("tfl") / "tiny-tok", "llama", seed=3, vocab=4096,
                            hidden=32, layers=2, heads=4, max_pos=128, varied=True, demo_tokenizer=True)


@pytest.fixture(scope="module")
def pkg(tok_model, tmp_path_factory):
    return api.export(tok_model, "tflite", tmp_path_factory.mktemp("tfl") / "pkg", CFG, OPTS)


@pytest.fixture(scope="module")
def ref(tok_model):
    return build_reference(load_spec(tok_model), load_state_dict(tok_model), CTX)


# ---- the package passes the ladder, every signature checked --------------------------------------
def test_package_passes_ladder_with_every_signature(pkg):
    assert pkg.passed, json.dumps(pkg.validation, indent=1)[:3000]
    v = pkg.validation
    assert v["heldout"]["top1_agreement"] == 1.0 and v["greedy"]["match"]
    sigs = v["vectors"]["extra"]["signatures"]
    assert set(sigs) == {f"prefill_{n}" for n in LENGTHS} and all(s["passed"] for s in sigs.values())
    assert all(s["prefill_max_abs_diff"] < 1e-4 for s in sigs.values())
    m = pkg.manifest
    assert m["io"]["prefill_lengths"] == list(LENGTHS) and m["kv_cache"]["layout"] == "io_static"
    assert m["report"]["composites"] == {"odml.rms_norm": 5 * 3, "odml.scaled_dot_product_attention": 2 * 3}
    assert m["report"]["attention_blocks_fused"] == "6/6"   # 2 layers x 3 signatures
    assert m["report"]["flex_ops"] == [] and m["report"]["custom_ops"] == []
    dec = {t["name"]: t for t in m["io"]["signatures"]["decode"]["inputs"]}
    assert dec["tokens"]["dtype"] == "int32" and dec["input_pos"]["shape"] == [1]
    assert dec["kv_cache_k_0"]["shape"] == [1, 2, CTX, 8]
    assert {"model.tflite", "model.litertlm", "test_vectors.safetensors", "test_vectors_tflite.safetensors",
            "tokenizer.json"} <= set(m["files"])
    assert api.validate(pkg.path)["passed"]


# ---- padding: padded rows only write cache rows that later steps overwrite ------------------------
@pytest.mark.parametrize("pad_positions", ["continue", "zeros"])
def test_padded_prefill_matches_reference_then_decode(ref, pad_positions):
    """A 5-token prompt in an 8-row signature: real rows equal the reference, padded rows write
    only cache rows >= 5, and decode steps that overwrite those rows match the reference.
    ``zeros`` is how LiteRT-LM pads (token 0 and position 0 past the prompt)."""
    mod = LiteRTDecoder(ref).eval()
    ids = torch.randint(1, ref.spec.vocab_size, (9,), generator=torch.Generator().manual_seed(0))
    n, rows = 5, 8
    tokens = torch.zeros(1, rows, dtype=torch.int32)
    tokens[0, :n] = ids[:n]
    pos = torch.arange(rows, dtype=torch.int32) if pad_positions == "continue" else torch.zeros(rows, dtype=torch.int32)
    pos[:n] = torch.arange(n)
    cache = sample_inputs(ref, rows)["kv_cache"]
    rr = ReferenceRunner(ref)
    with torch.no_grad():
        out = mod(tokens, pos, cache)
        want = rr.prefill(ids[:n].numpy())
        assert_close(out["logits"][0, :n].numpy(), want)
        exact = mod(tokens[:, :n], pos[:n], sample_inputs(ref, n)["kv_cache"])["kv_cache"]
        for name, c in out["kv_cache"].items():   # rows < n are the real prompt's, untouched by padding
            assert torch.allclose(c[:, :, :n], exact[name][:, :, :n], atol=1e-5)
            assert c[:, :, n:rows].abs().sum() > 0       # the padding did write rows past the prompt
        cache = out["kv_cache"]
        for t in range(n, 9):
            o = mod(ids[t:t + 1].int()[None], torch.tensor([t], dtype=torch.int32), cache)
            cache = o["kv_cache"]
            assert_close(o["logits"][0, 0].numpy(), rr.decode(int(ids[t]), t))


def test_wrapper_without_composites_is_the_same_function(ref):
    ids = torch.randint(0, ref.spec.vocab_size, (1, 6), generator=torch.Generator().manual_seed(1))
    pos = torch.arange(6, dtype=torch.int32)
    with torch.no_grad():
        a = LiteRTDecoder(ref, composites=True)(ids.int(), pos, sample_inputs(ref, 6)["kv_cache"])["logits"]
        b = LiteRTDecoder(ref, composites=False)(ids.int(), pos, sample_inputs(ref, 6)["kv_cache"])["logits"]
        c = ReferenceRunner(ref).prefill(ids[0].numpy())
    assert_close(a, b)
    assert_close(a[0], c)


def test_runner_near_end_of_context_never_clamps(pkg, ref):
    """Near max_context no padded signature fits (DYNAMIC_UPDATE_SLICE would clamp the start and
    overwrite real rows): the runner falls back to exact-size chunks and matches the reference."""
    runner = TFLiteTarget().runner(pkg.path, pkg.manifest)
    rr = ReferenceRunner(ref)
    ids = np.random.default_rng(5).integers(0, ref.spec.vocab_size, CTX)
    # chunks 16, 16, 9 (pos 41), then 7 tokens with 7 rows left: prefill_4 + three decode-signature steps
    bounds = [(0, 16), (16, 32), (32, 41), (41, CTX)]
    got = np.concatenate([runner.prefill(ids[a:b]) for a, b in bounds])
    want = np.concatenate([rr.prefill(ids[a:b]) for a, b in bounds])
    assert runner.pos == CTX
    assert_close(got, want)
    with pytest.raises(BadInputError) as e:
        runner.prefill(ids[:1])
    assert e.value.code == "E_CONTEXT_OVERFLOW"


# ---- verifier: corrupt, truncated, Flex ------------------------------------------------------------
def _corrupt(data: bytes, at: int, value: bytes) -> bytes:
    b = bytearray(data)
    b[at:at + len(value)] = value
    return bytes(b)


def test_verifier_rejects_corrupt_bytes_with_typed_error(pkg, tmp_path):
    data = (pkg.path / "model.tflite").read_bytes()
    summary = verify_bytes(data)
    assert set(summary.signatures) == {"decode", "prefill_4", "prefill_16"}
    assert set(summary.metadata) <= {"min_runtime_version", "keep_stablehlo_constant"}   # no timestamps
    bad = {
        "identifier": _corrupt(data, 4, b"XXXX"),
        "root offset": _corrupt(data, 0, (len(data) + 64).to_bytes(4, "little")),
        "vtable": _corrupt(data, int.from_bytes(data[:4], "little"), b"\xff\xff\xff\x7f"),
    }
    for what, blob in bad.items():
        with pytest.raises(ArtifactInvalid) as e:
            verify_bytes(blob)
        assert isinstance(e.value, BadInputError) and e.value.code == "E_TFLITE_INVALID", what
    rng, rejected = np.random.default_rng(0), 0
    for _ in range(50):   # random flips in the structural head of the file: rejected or harmless, never a crash
        b = bytearray(data)
        for i in rng.integers(0, 4096, 6):
            b[i] ^= 0xFF
        try:
            verify_bytes(bytes(b))
        except ArtifactInvalid:
            rejected += 1
    assert rejected >= 25
    (tmp_path / "m.tflite").write_bytes(bad["vtable"])
    with pytest.raises(ArtifactInvalid):
        TFLiteRunner(tmp_path / "m.tflite")


def test_semantic_reference_errors_are_caught(pkg):
    """Well-formed flatbuffers whose indices point nowhere (what flatbuffers' verifier misses)."""
    from ai_edge_litert import schema_py_generated as s

    m = s.ModelT.InitFromPackedBuf((pkg.path / "model.tflite").read_bytes(), 0)
    op = m.subgraphs[0].operators[0]
    op.inputs = [len(m.subgraphs[0].tensors) + 7, *list(op.inputs)[1:]]
    with pytest.raises(ArtifactInvalid, match="references tensor"):
        verify_bytes(_pack(m))
    m = s.ModelT.InitFromPackedBuf((pkg.path / "model.tflite").read_bytes(), 0)
    m.signatureDefs[0].subgraphIndex = 99
    with pytest.raises(ArtifactInvalid, match="subgraph 99"):
        verify_bytes(_pack(m))


def test_truncated_model_is_rejected(pkg, tmp_path):
    data = (pkg.path / "model.tflite").read_bytes()
    for cut in (6, 200, len(data) // 2, len(data) - 1):
        with pytest.raises(ArtifactInvalid):
            verify_bytes(data[:cut])
    trunc = tmp_path / "pkg"
    shutil.copytree(pkg.path, trunc)
    (trunc / "model.tflite").write_bytes(data[: len(data) // 3])
    problems = TFLiteTarget().check(trunc, pkg.manifest)
    assert problems and "outside" in problems[0]
    with pytest.raises(ArtifactInvalid):
        load_interpreter(data[: len(data) // 3])


def _pack(model) -> bytes:
    import flatbuffers

    b = flatbuffers.Builder(1024)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def test_flex_op_is_an_error_naming_op_and_layer(pkg, tmp_path):
    from ai_edge_litert import schema_py_generated as s

    m = s.ModelT.InitFromPackedBuf((pkg.path / "model.tflite").read_bytes(), 0)
    flex = s.OperatorCodeT()
    flex.builtinCode = flex.deprecatedBuiltinCode = s.BuiltinOperator.CUSTOM
    flex.customCode, flex.version = "FlexErf", 1
    m.operatorCodes.append(flex)
    sig = next(sd for sd in m.signatureDefs if sd.signatureKey == b"decode")
    g = m.subgraphs[sig.subgraphIndex]
    op = next(o for o in g.operators if m.operatorCodes[o.opcodeIndex].builtinCode == s.BuiltinOperator.LOGISTIC)
    op.opcodeIndex, op.builtinOptionsType, op.builtinOptions = len(m.operatorCodes) - 1, 0, None
    data = _pack(m)
    summary = verify_bytes(data)       # structurally fine ...
    problems = ops.forbidden_ops(summary)
    assert len(problems) == 1 and "FlexErf" in problems[0] and "decode" in problems[0] and "MLP_mlp" in problems[0]
    with pytest.raises(UnsupportedError) as e:      # ... but not accepted
        ops.require_builtin_only(summary)
    assert e.value.code == "E_TFLITE_FLEX_OP"
    assert ops.forbidden_ops(summary, allow_flex=True) == []
    flexpkg = tmp_path / "pkg"
    shutil.copytree(pkg.path, flexpkg)
    (flexpkg / "model.tflite").write_bytes(data)
    assert any("FlexErf" in p for p in TFLiteTarget().check(flexpkg, pkg.manifest))


# ---- LiteRT-LM -------------------------------------------------------------------------------------
def test_litertlm_bundle_generates_reference_greedy_tokens(pkg, ref, tok_model):
    """The unmodified LiteRT-LM runtime (litert-lm-api) loads model.litertlm and generates the
    reference's greedy continuation (prompt as the pipeline tokenizes it, stop token = eos)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tok_model / "tokenizer.json"))
    prompt = "Return the"
    want = greedy(ReferenceRunner(ref), np.array(tok.encode(prompt).ids), 24, (0,))
    want_text = tok.decode([t for t in want if t != 0])
    assert len(set(want)) > 3   # random weights: a discriminating continuation
    got = litertlm.generate(pkg.path / "model.litertlm", prompt, max_tokens=len(want))
    assert got == want_text
    api.verify(pkg.path)   # the runtime's XNNPACK cache went to a temporary dir, not into the package
    bundle = pkg.manifest["runtime"]["litert_lm"]
    assert bundle["stop_token_ids"] == [0] and bundle["start_token_id"] is None


def test_litertlm_prompt_longer_than_every_prefill_signature(pkg, tok_model):
    """A prompt over twice the longest prefill signature: LiteRT-LM prefills it in chunks of its own
    choosing (zero-padding the last) and still generates transformers' greedy continuation."""
    import transformers as tf
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tok_model / "tokenizer.json"))
    prompt = ("Return the value of the function that was called before the other one returned its first result. "
              "If the argument is a string, raise TypeError; otherwise return None for it.")   # 34 tokens
    ids = tok.encode(prompt).ids
    assert 2 * max(LENGTHS) < len(ids) and len(ids) % max(LENGTHS) not in LENGTHS   # a padded remainder
    n = CTX - len(ids) - 1
    model = tf.AutoModelForCausalLM.from_pretrained(tok_model).eval()
    with torch.no_grad():
        want = model.generate(torch.tensor(ids)[None], max_new_tokens=n, do_sample=False, eos_token_id=None)
    want = want[0, len(ids):].tolist()
    assert 0 not in want and len(set(want)) > 3
    assert litertlm.generate(pkg.path / "model.litertlm", prompt, max_tokens=n) == tok.decode(want)


# ---- options, CLI, preflight -------------------------------------------------------------------------
def test_options_validate_and_cap_lengths():
    assert TFLiteOptions(prefill_lengths=(128, 8, 32)).prefill_lengths == (8, 32, 128)
    assert TFLiteOptions().signature_lengths(128) == (8, 32, 128)
    assert TFLiteOptions().signature_lengths(100) == (8, 32, 100)
    assert TFLiteOptions().signature_lengths(8) == (8,)
    assert TFLiteOptions(precision="fp16").precision is TFLitePrecision.FP16
    for bad in [dict(prefill_lengths=()), dict(prefill_lengths=(0,)), dict(prefill_lengths=(8, 8)),
                dict(prefill_lengths="8,32"), dict(precision="int3")]:
        with pytest.raises(BadInputError) as e:
            TFLiteOptions(**bad)
        assert e.value.details["field"] in ("prefill_lengths", "precision")


def test_cli_parses_tflite_options():
    from slmpack.cli import build_parser
    from slmpack.targets.options import options_for

    args = build_parser().parse_args(["export", "--target", "tflite", "--tflite-prefill-lengths", "8,32,128",
                                      "--tflite-precision", "fp16"])
    opts = options_for("tflite", args)
    assert opts.prefill_lengths == (8, 32, 128) and opts.precision is TFLitePrecision.FP16
    with pytest.raises(SystemExit):
        build_parser().parse_args(["export", "--tflite-prefill-lengths", "8,x"])


def test_unsupported_combinations_fail_before_slow_work(tok_model, tmp_path):
    spec = load_spec(tok_model)   # hidden 32, intermediate 72: 72 is not a multiple of 32
    problems = TFLiteTarget().preflight(spec, TFLiteOptions(precision="dynamic_int4_block32"))
    assert problems and "multiple of 32" in str(problems[0])
    with pytest.raises(UnsupportedError) as e:
        api.export(tok_model, "tflite", tmp_path / "x", CFG, TFLiteOptions(precision="dynamic_int4_block32"))
    assert e.value.code == "E_TARGET_UNSUPPORTED" and not (tmp_path / "x").exists()


def test_quant_plan_is_checked_against_litert_capabilities(tok_model):
    from slmpack.calibration.plan import resolve_plan
    from slmpack.calibration.recipe import Recipe, Rule
    from slmpack.calibration.schemes import ActivationScheme, WeightScheme
    from slmpack.targets.tflite.quantize import weight_shapes

    spec = load_spec(tok_model)
    asym = Recipe("asym", (Rule("model.layers.*", WeightScheme(bits=8, symmetric=False)),))
    plan = resolve_plan(asym, weight_shapes(spec))
    problems = [str(p) for p in TFLiteTarget().preflight(spec, OPTS, plan)]
    assert any("symmetric" in p for p in problems)
    int4 = resolve_plan(Recipe("g32", (Rule("model.layers.*.self_attn.*", WeightScheme(bits=4, group_size=32)),)),
                        weight_shapes(spec))
    assert TFLiteTarget().preflight(spec, OPTS, int4) == []   # int4 g32 weight-only: INT4 + DEQUANTIZE
    dyn = resolve_plan(Recipe("8da8w", (Rule("model.layers.*", WeightScheme(bits=8),
                                             ActivationScheme(mode="dynamic_int8", symmetric=False)),)),
                       weight_shapes(spec))
    assert any("dynamic_int8" in str(p) for p in TFLiteTarget().preflight(spec, OPTS, dyn))
    int8 = resolve_plan(Recipe("int8", (Rule("*", WeightScheme(bits=8)),)), weight_shapes(spec))
    assert TFLiteTarget().preflight(spec, OPTS, int8) == []
    mixed = [str(p) for p in TFLiteTarget().preflight(spec, TFLiteOptions(precision="fp16"), int8)]
    assert any("cannot be combined" in p for p in mixed)


def test_plan_encoding_refuses_weights_it_cannot_find(pkg, tok_model):
    """encode_plan finds each weight by the bytes of its fake-quant value; a converted model that
    was not traced from the plan's fake-quant reference is refused with a typed error."""
    from slmpack.calibration.plan import QuantPlan, resolve_plan
    from slmpack.calibration.recipe import Recipe, Rule
    from slmpack.calibration.rtn import quantize_rtn
    from slmpack.calibration.schemes import WeightScheme
    from slmpack.errors import ToolchainError
    from slmpack.targets.tflite.quantize import encode_plan, weight_shapes

    spec = load_spec(tok_model)
    decisions = resolve_plan(Recipe("q", (Rule("model.layers.0.mlp.up_proj.weight", WeightScheme(bits=8)),)),
                             weight_shapes(spec))
    w = load_state_dict(tok_model)["model.layers.0.mlp.up_proj.weight"]
    plan = QuantPlan(decisions.recipe, decisions.decisions,
                     weights={"model.layers.0.mlp.up_proj.weight": quantize_rtn(w, 8, None, True)})
    with pytest.raises(ToolchainError) as e:
        encode_plan((pkg.path / "model.tflite").read_bytes(), plan)
    assert e.value.code == "E_TFLITE_QUANT_ENCODE"


# ---- the demo model (acceptance) -------------------------------------------------------------------
@pytest.mark.slow
def test_demo_model_package_passes_ladder(tmp_path):
    pkg = api.export(None, "tflite", tmp_path / "demo")
    v = pkg.validation
    assert pkg.passed, json.dumps(v, indent=1)[:3000]
    assert v["heldout"]["top1_agreement"] == 1.0
    assert v["greedy"]["match"] and v["greedy"]["tokens"] == 32
    assert set(v["vectors"]["extra"]["signatures"]) == {"prefill_8", "prefill_32", "prefill_128"}
    tok_ids = v["greedy"]["reference_ids"]
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(pkg.path / "tokenizer.json"))
    got = litertlm.generate(pkg.path / "model.litertlm", "Return the", max_tokens=len(tok_ids))
    assert got == tok.decode([t for t in tok_ids if t != 0])


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp16", "weight_only_int8", "dynamic_int8"])
def test_precision_recipes_export_and_pass_non_exact_ladder(tok_model, tmp_path, precision):
    pkg = api.export(tok_model, "tflite", tmp_path / precision, CFG, TFLiteOptions(prefill_lengths=LENGTHS,
                                                                                  precision=precision))
    assert pkg.passed and pkg.manifest["precision"] == precision
    assert "DEQUANTIZE" in pkg.manifest["report"]["op_types"] or precision == "dynamic_int8"
    assert pkg.validation["heldout"]["top1_agreement"] > 0.7


@pytest.mark.slow
def test_int8_quant_plan_is_encoded_bit_exactly(tok_model, tmp_path):
    """--quant int8: every weight stored as the plan's int8 + scales (read-back bit-identical),
    logits equal to the fake-quant reference within the plan tolerance."""
    pkg = api.export(tok_model, "tflite", tmp_path / "int8", CFG, OPTS, quant="int8")
    assert pkg.passed, json.dumps(pkg.validation, indent=1)[:3000]
    rb = pkg.manifest["report"]["readback"]
    assert rb["passed"] and rb["bit_identical"] and rb["max_abs_dequant_deviation"] == 0.0
    assert "DEQUANTIZE" in pkg.manifest["report"]["op_types"]
    assert pkg.validation["vectors"]["prefill_max_abs_diff"] < 1e-3
