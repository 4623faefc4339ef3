"""``--quant from-gguf``: the plan's integers and scales are the file's blocks, and they dequantize to
exactly what the gguf package dequantizes; types with no exact scheme are refused."""
from __future__ import annotations

import numpy as np
import pytest
from gguf import GGUFReader
from gguf.constants import GGMLQuantizationType as T
from gguf.quants import dequantize, quantize
from safetensors.numpy import load_file

from slmpack.calibration.plan import QuantPlan
from slmpack.errors import BadInputError
from slmpack.exporter.gguf.plan import unpack_blocks
from slmpack.exporter.gguf.source import materialised


def _blocks_by_hand(raw: np.ndarray, qtype) -> tuple[np.ndarray, np.ndarray]:
    """ggml-quants.c's block layouts, decoded element by element (independent of unpack_blocks)."""
    rows, size = raw.shape[0], (34 if qtype == T.Q8_0 else 18)
    q = np.zeros((rows, raw.shape[1] // size * 32), np.int64)
    d = np.zeros((rows, raw.shape[1] // size), np.float64)
    for r in range(rows):
        for b in range(d.shape[1]):
            blk = raw[r, b * size:(b + 1) * size]
            d[r, b] = float(np.frombuffer(blk[:2].tobytes(), np.float16)[0])
            for j in range(32):
                if qtype == T.Q8_0:
                    q[r, b * 32 + j] = int(np.frombuffer(blk[2 + j:3 + j].tobytes(), np.int8)[0])
                else:
                    byte = int(blk[2 + j % 16])
                    q[r, b * 32 + j] = ((byte & 15) if j < 16 else (byte >> 4)) - 8
    return q, d


@pytest.mark.parametrize("qtype", [T.Q8_0, T.Q4_0])
def test_unpack_is_the_block_layout(qtype):
    w = np.random.default_rng(0).standard_normal((6, 96)).astype(np.float32)
    w[2, 32:64] = 0.0   # an all-zero block
    raw = quantize(w, qtype)
    q, d = unpack_blocks(raw, qtype)
    hq, hd = _blocks_by_hand(raw, qtype)
    assert np.array_equal(q, hq) and np.array_equal(d, hd)
    assert q.dtype == np.int8 and q.min() >= (-128 if qtype == T.Q8_0 else -8) and q.max() <= (127 if qtype == T.Q8_0 else 7)
    deq = (q.astype(np.float32).reshape(6, -1, 32) * d[:, :, None]).reshape(6, 96)
    assert np.array_equal(deq, dequantize(raw, qtype))


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_0"])
def test_plan_holds_the_files_integers(gguf_of, qtype):
    path = gguf_of(qtype)
    reader = GGUFReader(path)   # the file as the gguf package reads it, independently of ours
    raw = {t.name: np.array(t.data) for t in reader.tensors}
    types = {t.name: t.tensor_type for t in reader.tensors}
    with materialised(path, from_gguf=True) as src:
        plan = QuantPlan.load(src.plan_dir)
        floats = load_file(str(src.model_dir / "model.safetensors"))
    bits = 8 if qtype == "Q8_0" else 4
    quantized = plan.quantized_names()
    # every Linear/Embedding weight stored as qtype is quantized; down_proj (72 columns: not whole
    # blocks) and the norms were written F32 and stay float
    assert sorted(quantized) == sorted(n for n in plan.decisions if "down_proj" not in n)
    for name in quantized:
        d = plan.decisions[name]
        assert (d.weight.bits, d.weight.group_size, d.weight.symmetric) == (bits, 32, True)
        assert np.array_equal(plan.dequantized(name).numpy(), floats[name]), name   # gguf's dequantization, bit for bit
    gname = {"model.embed_tokens.weight": "token_embd.weight", "lm_head.weight": "output.weight",
             "model.layers.1.mlp.up_proj.weight": "blk.1.ffn_up.weight",
             "model.layers.0.self_attn.v_proj.weight": "blk.0.attn_v.weight"}
    zero_blocks = 0
    for hf, gg in gname.items():   # unpermuted tensors: the plan's rows are the file's rows
        q, d = _blocks_by_hand(raw[gg], types[gg])
        qw = plan.weights[hf]
        zero_blocks += int((d == 0).sum())   # all-zero blocks (the padding token's embedding row) keep
        assert np.array_equal(qw.q.numpy(), q), hf   # q = 0 and get the plan's scale 1 instead of d = 0
        assert np.array_equal(qw.scale.numpy(), np.where(d == 0, 1.0, d)), hf
    assert zero_blocks > 0
    from tests.gguf.writer import permute   # llama q/k: the plan's rows are the file's rows un-permuted
    q, d = _blocks_by_hand(raw["blk.0.attn_k.weight"], types["blk.0.attn_k.weight"])
    qw = plan.weights["model.layers.0.self_attn.k_proj.weight"]
    assert np.array_equal(permute(qw.q.numpy(), 4, 2), q) and np.array_equal(permute(qw.scale.numpy(), 4, 2), d)


def test_inexact_types_are_refused(gguf_of):
    with pytest.raises(BadInputError) as e, materialised(gguf_of("Q4_1"), from_gguf=True):
        pass
    assert e.value.code == "E_GGUF_INEXACT" and "blk.0.attn_q.weight" in e.value.details["tensors"]
    assert set(e.value.details["tensors"].values()) == {"Q4_1"}


def test_float_gguf_has_nothing_to_keep(gguf_of):
    with pytest.raises(BadInputError) as e, materialised(gguf_of("F16"), from_gguf=True):
        pass
    assert e.value.code == "E_CONFIG" and "no Linear/Embedding weight" in str(e.value)


def test_a_build_recipe_may_name_a_gguf(gguf_of, tmp_path):
    """slmpack.toml ``model = "x.gguf"``: the file's bytes are the unit's cache key input."""
    import shutil

    from slmpack.build.inputs import FileHasher, input_files, unit_key
    from slmpack.build.recipe import load_recipe

    shutil.copy(gguf_of("Q8_0"), tmp_path / "m.gguf")
    (tmp_path / "slmpack.toml").write_text('[[package]]\nname = "m"\nmodel = "m.gguf"\ntargets = ["onnx"]\n'
                                           'quant = "from-gguf"\n')
    unit = load_recipe(tmp_path / "slmpack.toml").units()[0]
    key = unit_key(unit, FileHasher(None))
    assert input_files(unit) == [(tmp_path / "m.gguf").absolute()] and unit.entry.quant == "from-gguf"
    shutil.copy(gguf_of("Q4_0"), tmp_path / "m.gguf")
    assert unit_key(unit, FileHasher(None)) != key
