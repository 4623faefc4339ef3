"""LiteRT encodings of a QuantPlan beyond int8 per-channel weight-only (targets/tflite/quant_encode.py):
int4 / int8 group-wise weight-only (DEQUANTIZE, through the pipeline), and - on a single FC only,
not accepted by the pipeline yet - int8 per-channel x dynamic asymmetric int8 activations (hybrid
FULLY_CONNECTED) and int4 group-wise x dynamic activations (blockwise FULLY_CONNECTED)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from slmpack import api
from slmpack.calibration.plan import QuantPlan, resolve_plan
from slmpack.calibration.recipe import Recipe, Rule
from slmpack.calibration.rtn import quantize_rtn
from slmpack.calibration.schemes import ActivationMode, ActivationScheme, WeightScheme
from slmpack.config import ExportConfig, TraceConfig
from slmpack.bundled import demo_model_dir
from slmpack.exporter.spec import load_spec
from slmpack.quantize_config import QuantConfig
from slmpack.targets.tflite import quant_encode
from slmpack.targets.tflite.options import TFLiteOptions
from slmpack.targets.tflite.target import TFLiteTarget

CTX, PROMPT, LENGTHS = 48, 16, (4, 16)
CFG = ExportConfig(trace=TraceConfig(max_context=CTX, max_prompt=PROMPT))
OPTS = TFLiteOptions(prefill_lengths=LENGTHS)
A8_ASYM = {"mode": "dynamic_int8", "symmetric": False}


@pytest.fixture(scope="module")
def model64(tmp_path_factory) -> Path:
    """Tiny Llama (demo tokenizer's vocabulary 4096, hidden 64, intermediate 128: every input
    dimension a multiple of 32, several groups per row), weights at 5/sqrt(fan_in), tied."""
    import transformers as tf
    from safetensors.torch import load_file, save_file

    from tests.tiny_models import hf_config

    cfg = hf_config("llama", vocab=4096, hidden=64, layers=2, heads=4, max_pos=128)
    cfg.intermediate_size = 128
    torch.manual_seed(5)
    path = tmp_path_factory.mktemp("tflq") / "tiny64"
    tf.LlamaForCausalLM(cfg).eval().save_pretrained(path)
    sd, g = load_file(path / "model.safetensors"), torch.Generator().manual_seed(0)
    sd = {k: torch.randn(v.shape, generator=g) * 5 / v.shape[-1] ** 0.5 if v.dim() == 2 else v for k, v in sd.items()}
    save_file(sd, str(path / "model.safetensors"), metadata={"format": "pt"})
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copyfile(demo_model_dir() / name, path / name)
    return path


def _quant(tmp_path: Path, recipe: dict | str) -> QuantConfig:
    if isinstance(recipe, str):
        return QuantConfig(recipe=recipe, calib_windows=4, calib_window_tokens=32)
    f = tmp_path / "recipe.json"
    f.write_text(json.dumps(recipe))
    return QuantConfig(recipe=str(f), calib_windows=4, calib_window_tokens=32)


def _export(model, out, quant):
    pkg = api.export(model, "tflite", out, CFG, OPTS, quant=quant)
    assert pkg.passed, json.dumps(pkg.validation, indent=1)[:3000]
    return pkg


# ---- end to end through the real pipeline -----------------------------------------------------------
def test_int4_preset_is_encoded_bit_exactly(model64, tmp_path):
    """--quant int4: layers int4 g32 as INT4 [rows*groups, 32] + DEQUANTIZE + RESHAPE, embedding /
    lm_head int8: read-back bit-identical, logits equal to the fake-quant reference (fp32 order)."""
    pkg = _export(model64, tmp_path / "int4", _quant(tmp_path, "int4"))
    rb = pkg.manifest["report"]["readback"]
    assert rb["passed"] and rb["bit_identical"] and rb["max_abs_dequant_deviation"] == 0.0, rb["problems"]
    assert rb["tensors_checked"] == 1 + 2 * 7
    enc = pkg.manifest["report"]["quantization"]
    assert enc["scheme"] == "dequantize"
    assert {t["bits"] for t in enc["tensors"].values()} == {4, 8}
    assert pkg.validation["vectors"]["prefill_max_abs_diff"] < 1e-3
    assert pkg.validation["heldout"]["top1_agreement"] >= 0.99
    assert "DEQUANTIZE" in pkg.manifest["report"]["op_types"] and "RESHAPE" in pkg.manifest["report"]["op_types"]


# ---- one FULLY_CONNECTED against numpy ------------------------------------------------------------------
def _fc_model(rows, cols, batch):
    """A converted fp32 one-FC flatbuffer whose weight constant is ``w`` (built by hand)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    def model(w: np.ndarray) -> bytes:
        m = s.ModelT()
        m.version, m.buffers = 3, [s.BufferT(), s.BufferT()]
        m.buffers[1].data = np.ascontiguousarray(w, np.float32).view(np.uint8).ravel()
        g = s.SubGraphT()
        g.tensors = []
        for shape, buf, name in (([batch, cols], 0, b"x"), ([rows, cols], 1, b"w"), ([batch, rows], 0, b"y")):
            t = s.TensorT()
            t.shape, t.type, t.buffer, t.name = np.asarray(shape, np.int32), s.TensorType.FLOAT32, buf, name
            g.tensors.append(t)
        code = s.OperatorCodeT()
        code.builtinCode = code.deprecatedBuiltinCode = s.BuiltinOperator.FULLY_CONNECTED
        code.version = 1
        m.operatorCodes = [code]
        op = s.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = 0, [0, 1, -1], [2]
        op.builtinOptionsType, op.builtinOptions = s.BuiltinOptions.FullyConnectedOptions, s.FullyConnectedOptionsT()
        g.operators, g.inputs, g.outputs, g.name = [op], [0], [2], b"main"
        m.subgraphs = [g]
        b = flatbuffers.Builder(1024)
        b.Finish(m.Pack(b), file_identifier=b"TFL3")
        return bytes(b.Output())
    return model


def _run(data: bytes, x: np.ndarray, xnnpack: bool) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kw = {} if xnnpack else {"experimental_op_resolver_type": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
    it = Interpreter(model_content=data, num_threads=1, **kw)
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"])


def _asym_rows(x: np.ndarray) -> np.ndarray:
    """numpy per-row asymmetric int8 fake-quant (exporter/fake_quant._dynamic_asymmetric)."""
    lo, hi = np.minimum(x.min(-1, keepdims=True), 0), np.maximum(x.max(-1, keepdims=True), 0)
    s = (hi - lo) / 255
    zp = np.round(-lo / s) - 128
    return (np.clip(np.round(x / s) + zp, -128, 127) - zp) * s


@pytest.mark.parametrize("bits,group,act", [(4, 32, "none"), (4, None, "none"), (8, 64, "none"),
                                            (8, None, "dynamic"), (4, 32, "dynamic"), (4, 64, "dynamic")])
def test_single_fc_matches_numpy_on_the_plans_integers(bits, group, act):
    rows, cols, batch = 48, 128, 5
    g = torch.Generator().manual_seed(bits * 1000 + (group or 0))
    w = torch.randn(rows, cols, generator=g)
    qw = quantize_rtn(w, bits, group, True)
    scheme = ActivationScheme(mode=ActivationMode.DYNAMIC_INT8, symmetric=False) if act == "dynamic" \
        else ActivationScheme()
    name = "model.layers.0.mlp.up_proj.weight"
    decisions = resolve_plan(Recipe("r", (Rule(name, WeightScheme(bits=bits, group_size=group), scheme),)),
                             {name: (rows, cols)})
    plan = QuantPlan("r", decisions.decisions, weights={name: qw})
    data, rep = quant_encode.encode_plan(_fc_model(rows, cols, batch)(qw.dequantize().numpy()), plan)
    kind = {"none": "dequantize", "dynamic": "hybrid" if bits == 8 else "blockwise"}[act]
    assert rep["tensors"][name]["schemes"] == {kind: 1}
    x = torch.randn(batch, cols, generator=g).numpy()
    x[0] += 2.0   # a row whose asymmetric range differs from its symmetric one
    q = qw.q.numpy().astype(np.float32).reshape(rows, qw.scale.shape[1], -1)
    scale = qw.scale.numpy()
    if kind == "blockwise":
        scale = quant_encode.bf16_round(scale).astype(np.float32)
    wq = (q * scale[:, :, None]).reshape(rows, cols)
    want = (x if act == "none" else _asym_rows(x)) @ wq.T
    for xnnpack in (True, False):
        got = _run(data, x, xnnpack)
        assert np.abs(got - want).max() <= 2e-5 * np.abs(want).max(), (xnnpack, np.abs(got - want).max())
    if kind == "dequantize":   # DEQUANTIZE is bit-exact: an identity input returns q * scale itself
        eye = np.eye(cols, dtype=np.float32)
        data_eye, _ = quant_encode.encode_plan(_fc_model(rows, cols, cols)(qw.dequantize().numpy()), plan)
        assert np.array_equal(_run(data_eye, eye, True), qw.dequantize().numpy().T)
    again, _ = quant_encode.encode_plan(_fc_model(rows, cols, batch)(qw.dequantize().numpy()), plan)
    assert again == data   # deterministic bytes


def test_int4_packing_is_low_nibble_first():
    q = np.array([-8, 7, 1, -1, 3], np.int8)
    packed = quant_encode.pack_int4(q)
    assert packed.tolist() == [0x78, 0xF1, 0x03]
    assert quant_encode.unpack_int4(packed, 5).tolist() == q.tolist()


# ---- refusals before calibration ------------------------------------------------------------------------
@pytest.mark.parametrize("weight,act,needle", [
    ({"bits": 8, "symmetric": False}, None, "symmetric"),
    ({"bits": 4, "group_size": 32}, {"mode": "dynamic_int8"}, "dynamic_int8"),   # the 8da4w preset's
    ({"bits": 8}, A8_ASYM, "dynamic_int8"),   # encodable per FC, not yet end to end (quantize.py)
    ({"bits": 8}, {"mode": "static_int8"}, "static_int8"),
])
def test_unencodable_plans_are_refused_naming_tensors(model64, tmp_path, weight, act, needle):
    rule = {"pattern": "model.layers.*.mlp.*", "weight": weight, **({"activation": act} if act else {})}
    quant = _quant(tmp_path, {"name": "bad", "rules": [rule]})
    from slmpack.errors import UnsupportedError

    with pytest.raises(UnsupportedError) as e:
        api.export(model64, "tflite", tmp_path / "x", CFG, OPTS, quant=quant)
    assert needle in e.value.message and "model.layers.0.mlp.up_proj.weight" in e.value.message
    assert not (tmp_path / "x").exists()


def test_capabilities_accept_the_encoded_presets(model64):
    from slmpack.calibration.recipe import preset
    from slmpack.targets.tflite.quantize import weight_shapes

    spec = load_spec(model64)
    for name, ok in (("int8", True), ("int4", True), ("8da4w", False), ("w8a8", False)):
        plan = resolve_plan(preset(name), weight_shapes(spec))
        assert (TFLiteTarget().preflight(spec, OPTS, plan) == []) is ok, name
