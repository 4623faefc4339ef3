"""Core ML target: .mlpackage lowering, validated on Linux through our MIL interpreter.

Fast tests use one tiny random Llama (2 layers, weights redrawn so greedy decoding is not one
repeated token); the demo-model acceptance exports are ``@pytest.mark.slow`` (about 2-3 minutes
each on an idle 2-core machine).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import slmpack
from slmpack import api
from slmpack.calibration.build_plan import model_weights
from slmpack.calibration.plan import QuantPlan, TensorDecision
from slmpack.calibration.rtn import quantize_rtn
from slmpack.calibration.schemes import FLOAT_ACTIVATIONS, WeightScheme
from slmpack.config import ExportConfig, TraceConfig
from slmpack.errors import BadInputError, UnsupportedError
from slmpack.exporter.checkpoint import load_state_dict
from slmpack.exporter.kv_cache import CacheLayout, CacheUpdate
from slmpack.exporter.reference import build_reference
from slmpack.exporter.reference_runner import ReferenceRunner
from slmpack.exporter.spec import load_spec
from slmpack.exporter.trace import trace_programs
from slmpack.targets import registry
from slmpack.targets.coreml import lower as coreml_lower
from slmpack.targets.coreml.options import CoreMLOptions
from slmpack.runtime.adapters.coreml import CoreMLRunner, InterpreterRunner, coreml_runtime_available, open_coreml
from slmpack.runtime.integrity import read_manifest
from tests.tiny_models import write_tiny_model

CTX, PROMPT = 48, 16
CFG = ExportConfig(trace=TraceConfig(max_context=CTX, max_prompt=PROMPT))
FP32_IOS18 = CoreMLOptions(deployment_target="ios18", compute_precision="fp32")
FP16_IOS17 = CoreMLOptions(deployment_target="ios17", compute_precision="fp16")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("cml") / "tiny", "llama", seed=5, vocab=96, hidden=32,
                            layers=2, heads=4, max_pos=128, varied=True)


@pytest.fixture(scope="module")
def state_pkg(tiny, tmp_path_factory):
    """iOS 18, fp32 compute, KV cache as Core ML state: the strict (exact) configuration."""
    return api.export(tiny, "coreml", tmp_path_factory.mktemp("cml") / "ios18", CFG, FP32_IOS18)


# ---- packages and the validation ladder ------------------------------------------------------

def test_ios18_state_package_passes_the_ladder_exactly(state_pkg):
    v = state_pkg.validation
    assert v["passed"], v
    assert v["structural"]["problems"] == []
    assert v["heldout"]["top1_agreement"] == 1.0 and v["heldout"]["tokens"] >= 512
    assert v["greedy"]["match"] and v["greedy"]["tokens"] == 32
    assert len(set(v["greedy"]["reference_ids"])) > 3          # a discriminating continuation
    # fp32 compute, past keys/values read from the fp16 state: the reference rounds its cache the same way
    assert v["vectors"]["prefill_max_abs_diff"] < 1e-3 and v["vectors"]["decode_max_abs_diff"] < 1e-3


def test_ios18_state_rounds_the_past_to_fp16_as_the_reference_models(tiny, state_pkg):
    """Decode after a prefill: the package agrees with the fp16-cache reference, and an fp32-cache
    reference is farther away (the state really holds fp16)."""
    pkg = slmpack.load(state_pkg.path).runner()
    ids = np.arange(1, 12) % load_spec(tiny).vocab_size
    got = [pkg.prefill(ids)[-1]] + [pkg.decode(t, len(ids) + i) for i, t in enumerate((5, 9, 2))]
    far = []
    for kv in ("float16", "float32"):
        r = ReferenceRunner(_ref(tiny), kv)
        want = [r.prefill(ids)[-1]] + [r.decode(t, len(ids) + i) for i, t in enumerate((5, 9, 2))]
        far.append(max(float(np.abs(g - w).max()) for g, w in zip(got, want)))
    assert far[0] < 1e-3 and far[0] < far[1], far


def test_ios18_manifest_describes_states_and_io(state_pkg):
    m = json.loads((state_pkg.path / "manifest.json").read_text())
    assert m["target"] == "coreml" and m["artifact"] == "model.mlpackage" and m["precision"] == "fp32"
    assert m["runtime"] == {"name": "coreml", "min_version": "iOS 18", "deployment_target": "ios18",
                            "compute_units": "all", "compute_precision": "fp32", "specification_version": 9}
    assert [i["name"] for i in m["io"]["inputs"]] == ["tokens", "input_pos"]
    assert m["io"]["inputs"][0] == {"name": "tokens", "dtype": "int32", "shape": [1, f"seq[1..{PROMPT}]"]}
    assert m["io"]["outputs"] == [{"name": "logits", "dtype": "float32", "shape": [1, f"seq[1..{PROMPT}]", 96]}]
    assert [s["name"] for s in m["io"]["states"]] == ["k_cache_0", "v_cache_0", "k_cache_1", "v_cache_1"]
    assert m["io"]["states"][0] == {"name": "k_cache_0", "dtype": "float16", "shape": [1, 2, CTX, 8]}
    assert m["kv_cache"]["kind"] == "state" and m["kv_cache"]["dtype"] == "float16"
    assert {"read_state", "write_state", "slice_update"} <= set(m["report"]["op_types"])
    assert m["report"]["passes"]["fix_select_broadcast"] >= 1
    assert m["report"]["passes"]["fuse_sdpa"] == 2 and m["report"]["attention_blocks_fused"] == "2/2"
    assert "model.mlpackage/Data/com.apple.CoreML/weights/weight.bin" in m["files"]
    mlp = json.loads((state_pkg.path / "model.mlpackage" / "Manifest.json").read_text())
    assert not (state_pkg.path / "model.mlpackage" / "executorch_debug_handle_mapping.json").exists()
    assert all(k == k.upper() for k in mlp["itemInfoEntries"])  # name-derived, not random, UUIDs


def test_ios17_io_cache_fp16_package_passes_via_the_cli(tiny_llama, tmp_path, capsys):
    """fp16 on HF-initialized weights (the rescaled model's logits reach ~1e3: a poor fp16 test case)."""
    from slmpack.cli import main

    out = tmp_path / "ios17"
    code = main(["export", str(tiny_llama), "--target", "coreml", "--out", str(out), "--max-context", str(CTX),
                 "--max-prompt", str(PROMPT), "--coreml-deployment-target", "ios17",
                 "--coreml-compute-precision", "fp16", "--coreml-compute-units", "cpu_and_ne", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0, doc
    v = doc["packages"][0]["validation"]
    assert v["passed"] and v["heldout"]["top1_agreement"] >= 0.99, v["heldout"]
    m = json.loads((out / "manifest.json").read_text())
    assert m["precision"] == "fp16" and m["runtime"]["compute_units"] == "cpu_and_ne"
    assert m["runtime"]["specification_version"] == 8 and m["kv_cache"]["kind"] == "io"
    assert m["io"]["states"] == [] and m["io"]["inputs"][2]["name"] == "k_cache_0"
    assert m["io"]["inputs"][2]["dtype"] == "float16"
    assert [o["name"] for o in m["io"]["outputs"]][:2] == ["logits", "k_cache_0_out"]
    assert not {"read_state", "write_state", "slice_update"} & set(m["report"]["op_types"])  # iOS 17 ops only
    assert m["report"]["attention_blocks_fused"] == "0/2" and "iOS 18" in m["report"]["attention_not_fused"]
    assert "fuse_sdpa" not in m["report"]["passes"] and _saved_op_types(out).count("softmax") == 2
    assert "scaled_dot_product_attention" not in m["report"]["op_types"]
    assert api.validate(out)["passed"]                         # re-validation from the package alone


def _saved_op_types(pkg_dir: Path) -> list[str]:
    from slmpack.runtime.mil.program import load_model_spec

    spec, _ = load_model_spec(pkg_dir / "model.mlpackage")
    fn = spec.mlProgram.functions["main"]
    return [op.type for op in fn.block_specializations[fn.opset].operations]


def test_ios18_attention_runs_as_the_fused_sdpa_op(state_pkg):
    """Every layer's attention is one scaled_dot_product_attention in the saved program, and the ladder
    (exact for fp32, see above) ran it through the interpreter."""
    ops = _saved_op_types(state_pkg.path)
    assert ops.count("scaled_dot_product_attention") == 2 and "softmax" not in ops
    assert state_pkg.manifest["report"]["attention_blocks_fused"] == "2/2"
    assert "attention_not_fused" not in state_pkg.manifest["report"]
    assert state_pkg.validation["passed"] and state_pkg.validation["greedy"]["match"]


def test_structural_check_catches_a_manifest_that_lies(state_pkg):
    m = json.loads((state_pkg.path / "manifest.json").read_text())
    target = registry.get("coreml")
    assert target.check(state_pkg.path, m) == []
    m["io"]["states"][0]["shape"] = [1, 2, CTX * 2, 8]
    m["runtime"]["deployment_target"] = "ios17"                # states and slice_update need iOS 18
    problems = " | ".join(target.check(state_pkg.path, m))
    assert "states differ" in problems and "specification version 9 != 8" in problems
    assert "'read_state' needs specification version 9" in problems


class _BoolAnd(torch.nn.Module):
    def forward(self, tokens, positions):
        return ((tokens > 0) & (positions > 0)).int()   # aten bitwise_and on bools: coremltools 9 has none


def test_a_failed_conversion_does_not_break_the_next_one(tiny, tmp_path):
    """coremltools resets its process-wide symbol table only after a successful conversion: one
    failed export used to make every later Core ML export fail ("Symbol `seq` is used already")."""
    from slmpack.errors import ToolchainError

    ep = torch.export.export(_BoolAnd(), (torch.ones(1, 4, dtype=torch.int32), torch.arange(4, dtype=torch.int32)))
    with pytest.raises(ToolchainError) as e:
        coreml_lower.convert(ep, load_spec(tiny), FP32_IOS18, CacheLayout.BUFFER, PROMPT, CTX)
    assert e.value.code == "E_COREML_CONVERT"
    pkg = api.export(tiny, "coreml", tmp_path / "after", CFG, FP32_IOS18)
    assert pkg.passed, pkg.validation


# ---- the slice-assignment KV cache (exporter/kv_cache.py) -------------------------------------

@pytest.mark.parametrize("layout", [CacheLayout.BUFFER, CacheLayout.IO_STATIC])
def test_slice_cache_update_equals_index_copy(tiny, layout):
    from slmpack.exporter.programs import BufferProgram, StaticIOProgram

    ref = _ref(tiny)
    spec = ref.spec
    make = (lambda u: BufferProgram(ref, CTX, update=u)) if layout is CacheLayout.BUFFER else (
        lambda u: StaticIOProgram(ref, update=u))
    a, b = make(CacheUpdate.INDEX_COPY), make(CacheUpdate.SLICE)
    caches = tuple(torch.zeros(1, spec.num_kv_heads, CTX, spec.head_dim) for _ in range(2 * spec.num_layers))
    with torch.no_grad():
        for start, n in ((0, 5), (5, 1), (6, 3)):
            ids, pos = torch.arange(start, start + n)[None] % spec.vocab_size, torch.arange(start, start + n)
            if layout is CacheLayout.BUFFER:
                torch.testing.assert_close(a(ids, pos), b(ids, pos), rtol=0, atol=0)
            else:
                out_a, out_b = a(ids, pos, *caches), b(ids, pos, *caches)
                for x, y in zip(out_a, out_b):
                    torch.testing.assert_close(x, y, rtol=0, atol=0)
                caches = out_a[1:]
    if layout is CacheLayout.BUFFER:
        for x, y in zip(a.buffers(), b.buffers()):
            torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_tracing_the_buffer_program_leaves_the_reference_intact(tiny):
    """trace_programs resets the KV caches after tracing prefill, and nothing else (it used to zero
    every module buffer, the reference's RoPE tables included)."""
    ref = _ref(tiny)
    cos, sin = ref.rope_cos.clone(), ref.rope_sin.clone()
    trace_programs(ref, CacheLayout.BUFFER, CFG.trace, update=CacheUpdate.SLICE)
    assert torch.equal(ref.rope_cos, cos) and torch.equal(ref.rope_sin, sin)


def test_int8_quant_plan_through_the_pipeline_with_readback(tiny, tmp_path):
    from slmpack.quantize_config import QuantConfig

    cfg = ExportConfig(trace=TraceConfig(max_context=CTX, max_prompt=PROMPT), quant=QuantConfig(recipe="int8"))
    opts = CoreMLOptions(deployment_target="ios17", compute_precision="fp32")
    pkg = api.export(tiny, "coreml", tmp_path / "q8", cfg, opts)
    v, m = pkg.validation, pkg.manifest
    assert v["passed"], v
    assert v["heldout"]["reference"] == "fake_quant" and v["heldout"]["top1_agreement"] == 1.0
    assert m["precision"] == "int8" and m["quantization"]["readback_passed"] is True
    rb = m["report"]["readback"]
    assert rb["bit_identical"] and rb["max_abs_dequant_deviation"] < 1e-6
    assert len(rb["tensors"]) == 15                             # 2 x 7 linears + the tied embedding
    assert "constexpr_affine_dequantize" in m["report"]["op_types"]


# ---- options refused before any work ---------------------------------------------------------

def test_invalid_option_values_are_typed_errors():
    with pytest.raises(BadInputError, match="deployment_target") as e:
        CoreMLOptions(deployment_target="ios12")
    assert e.value.code == "E_CONFIG"
    with pytest.raises(BadInputError, match="compute_precision"):
        CoreMLOptions(compute_precision="int8")


def test_states_below_ios18_are_refused_in_preflight(tiny, tmp_path):
    opts = CoreMLOptions(deployment_target="ios17", kv_cache="state")
    spec = load_spec(tiny)
    problems = registry.get("coreml").preflight(spec, opts)
    assert problems and "iOS 18" in str(problems[0])
    with pytest.raises(UnsupportedError) as e:
        api.export(tiny, "coreml", tmp_path / "x", CFG, opts)
    assert e.value.code == "E_TARGET_UNSUPPORTED" and not (tmp_path / "x").exists()


def test_int4_and_per_block_plans_are_refused_below_ios18(tiny):
    ref = _ref(tiny)
    spec = load_spec(tiny)
    target = registry.get("coreml")
    assert target.preflight(spec, CoreMLOptions(deployment_target="ios18"), _plan(ref, 4, 8)) == []
    int4 = target.preflight(spec, CoreMLOptions(deployment_target="macos14"), _plan(ref, 4, None))
    assert int4 and all("int4 weights need" in p.reason for p in int4)
    block8 = target.preflight(spec, CoreMLOptions(deployment_target="ios17"), _plan(ref, 8, 8))
    assert block8 and all("per-block scales" in p.reason for p in block8)
    assert target.preflight(spec, CoreMLOptions(deployment_target="ios17"), _plan(ref, 8, None)) == []
    pal = target.preflight(spec, CoreMLOptions(deployment_target="ios17", palettize=True))
    assert pal and "lookup tables" in pal[0].reason
    with pytest.raises(UnsupportedError):
        coreml_lower.refuse(spec, CoreMLOptions(deployment_target="ios17"), _plan(ref, 4, 8))


# ---- QuantPlan encoding ------------------------------------------------------------------------

def _ref(model_dir, sd=None):
    return build_reference(load_spec(model_dir), sd if sd is not None else load_state_dict(model_dir), CTX)


def _plan(ref, bits: int, group: int | None, symmetric: bool = False) -> QuantPlan:
    """RTN plan quantizing every Linear/Embedding weight (lm_head tied to the embedding)."""
    _, shapes, embeds, ties = model_weights(ref)
    scheme = WeightScheme(bits=bits, group_size=group, symmetric=symmetric)
    decisions = {n: TensorDecision(n, "embedding" if n in embeds else "linear", tuple(s), scheme, FLOAT_ACTIVATIONS,
                                   0, ties.get(n)) for n, s in shapes.items()}
    weights = {n: quantize_rtn(ref.get_parameter(n), bits, group, symmetric) for n in shapes if n not in ties}
    return QuantPlan(recipe="test", decisions=decisions, weights=weights)


@pytest.mark.parametrize("target,bits,group,palettize", [("ios18", 4, 8, False), ("ios17", 8, None, False),
                                                         ("ios18", 4, 8, True)])
def test_quant_plan_numbers_are_packed_exactly(tiny, tmp_path, target, bits, group, palettize):
    ref = _ref(tiny)
    plan = _plan(ref, bits, group)
    spec = load_spec(tiny)
    opts = CoreMLOptions(deployment_target=target, compute_precision="fp32", kv_cache="io", palettize=palettize)
    programs = trace_programs(ref, CacheLayout.IO_STATIC, CFG.trace, update=CacheUpdate.SLICE)
    art = coreml_lower.lower(programs, spec, opts, tmp_path, {}, plan)
    n_quant = len({plan.owner(n) for n in plan.quantized_names()})
    assert art.report.details["passes"]["apply_quant_plan"] == n_quant
    op = {(4, False): "constexpr_blockwise_shift_scale", (8, False): "constexpr_affine_dequantize"}.get(
        (bits, palettize), "constexpr_lut_to_dense")
    assert op in art.report.details["op_types"]
    runner = InterpreterRunner(tmp_path / art.primary, art.kv_cache, PROMPT, CTX)
    fake = ReferenceRunner(_ref(tiny, plan.fake_quant_state_dict(load_state_dict(tiny))))
    ids = np.arange(1, 12) % spec.vocab_size
    got, want = runner.prefill(ids), fake.prefill(ids)
    assert np.abs(got - want).max() < 1e-4 * max(1.0, np.abs(want).max())
    if not palettize:  # per-block tables hold 2^bits entries per block: smaller only for large blocks
        weight_bytes = (tmp_path / art.primary / "Data/com.apple.CoreML/weights/weight.bin").stat().st_size
        assert weight_bytes < 0.45 * 4 * spec.num_parameters    # vs fp32 weights (scales included)


# ---- runners -----------------------------------------------------------------------------------

def test_runner_selection_on_this_platform(state_pkg, monkeypatch):
    m = read_manifest(state_pkg.path)
    monkeypatch.delenv("SLMPACK_COREML_RUNNER", raising=False)
    ok, _ = coreml_runtime_available()
    assert isinstance(open_coreml(state_pkg.path, m), CoreMLRunner if ok else InterpreterRunner)
    assert isinstance(open_coreml(state_pkg.path, m, "interpreter"), InterpreterRunner)
    with pytest.raises(BadInputError):
        open_coreml(state_pkg.path, m, "gpu")


@pytest.mark.skipif(not coreml_runtime_available()[0], reason=f"real Core ML unavailable: "
                    f"{coreml_runtime_available()[1]}")
def test_core_ml_runtime_agrees_with_the_interpreter(state_pkg):  # pragma: no cover - macOS only
    m = read_manifest(state_pkg.path)
    real, ours = open_coreml(state_pkg.path, m, "coreml"), open_coreml(state_pkg.path, m, "interpreter")
    ids = np.arange(1, 10)
    np.testing.assert_allclose(real.prefill(ids), ours.prefill(ids), atol=5e-2)
    np.testing.assert_allclose(real.decode(3, 9), ours.decode(3, 9), atol=5e-2)


def test_runner_rejects_chunks_the_package_cannot_take(state_pkg):
    r = open_coreml(state_pkg.path, read_manifest(state_pkg.path), "interpreter")
    with pytest.raises(BadInputError, match="1..16"):
        r.prefill(np.zeros(PROMPT + 1, np.int64))
    r.prefill(np.zeros(3, np.int64))
    with pytest.raises(BadInputError, match="position"):
        r.decode(1, 7)


# ---- demo model acceptance (slow) --------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("opts", [FP32_IOS18, CoreMLOptions(deployment_target="ios18"), FP16_IOS17],
                         ids=["ios18-fp32-state", "ios18-fp16-state", "ios17-fp16-io"])
def test_demo_model_packages_pass_the_ladder(tmp_path, opts):
    pkg = api.export(None, "coreml", tmp_path / "demo", ExportConfig(), opts)
    v = pkg.validation
    assert v["passed"], v
    if opts.compute_precision.value == "fp32":
        assert v["heldout"]["top1_agreement"] == 1.0 and v["greedy"]["match"] and v["greedy"]["tokens"] == 32
    else:
        assert v["heldout"]["top1_agreement"] >= 0.99
    print(f"\n{opts.to_json()}: top1 {v['heldout']['top1_agreement']}, KL {v['heldout']['mean_kl']:.3g}, "
          f"max|dlogit| {max(v['vectors']['prefill_max_abs_diff'], v['vectors']['decode_max_abs_diff']):.3g}",
          file=sys.stderr)
