"""End to end on ONNX: a GGUF of the tiny instruct checkpoint exports like the checkpoint itself,
and ``--quant from-gguf`` puts the file's own integers into the artifact."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from gguf import GGUFReader
from safetensors.numpy import load_file

from slmpack.targets.onnx.quantize import META_KEY
from slmpack.targets.onnx.readback import _Reader, decode_node
from tests.gguf.test_from_gguf_plan import _blocks_by_hand
from tests.gguf.writer import permute


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slmpack.cli", "export", *map(str, args), "--json"],
                          capture_output=True, text=True, timeout=900)


def _manifest(pkg: Path) -> dict:
    return json.loads((pkg / "manifest.json").read_text())


@pytest.fixture(scope="module")
def checkpoint_package(instruct, tmp_path_factory):
    from slmpack import api

    return api.export(instruct, "onnx", tmp_path_factory.mktemp("ckpt") / "onnx").path


def test_f32_gguf_exports_like_its_checkpoint(gguf_of, checkpoint_package, tmp_path):
    r = _cli(gguf_of("F32"), "--target", "onnx", "--out", tmp_path / "pkg")
    assert r.returncode == 0, r.stderr
    pkg, ref = tmp_path / "pkg", checkpoint_package
    m, mref = _manifest(pkg), _manifest(ref)
    parity = m["validation"]["tokenizer_parity"]
    assert m["validation"]["passed"] and parity["passed"]
    assert parity["runtimes"]["onnxruntime-genai"]["lines"] >= 2000 and parity["runtimes"]["onnxruntime-genai"]["mismatches"] == 0
    v, vref = load_file(str(pkg / "test_vectors.safetensors")), load_file(str(ref / "test_vectors.safetensors"))
    for k in ("prompt_ids", "decode_ids", "greedy_prompt_ids", "greedy_ids"):
        assert np.array_equal(v[k], vref[k]), k
    bound = m["validation"]["vectors"]["bound"]
    for k in ("prefill_logits", "decode_logits"):
        assert np.abs(v[k] - vref[k]).max() <= bound, k
    assert (pkg / "chat_template.jinja").read_text() == (ref / "chat_template.jinja").read_text()
    assert m["tokenizer"]["chat"] == mref["tokenizer"]["chat"] and len(m["tokenizer"]["chat"]["stop_token_ids"]) == 2
    assert m["model"] == mref["model"]
    assert m["source"]["gguf"]["file"] == "instruct-F32.gguf" and m["source"]["model_dir_name"] == "instruct-F32.gguf"


def _onnx_integers(pkg: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(q, scales) of every encoded tensor, decoded from model.onnx the way ONNX Runtime reads it."""
    model = onnx.load(str(pkg / "model.onnx"))
    meta = json.loads({p.key: p.value for p in model.metadata_props}[META_KEY])
    r, out = _Reader(model), {}
    for node_name, entry in meta.items():
        dec = decode_node(r, r.nodes[node_name], entry.get("scales"), entry)
        for name, r0, r1 in entry["tensors"]:
            out[name] = (dec["q"][r0:r1], dec["scales"][r0:r1])
    return out


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_0"])
def test_from_gguf_keeps_the_files_integers(gguf_of, tmp_path, qtype):
    from slmpack import api
    from slmpack.config import ExportConfig
    from slmpack.quantize_config import QuantConfig

    path = gguf_of(qtype)
    pkg = api.export(path, "onnx", tmp_path / "pkg", ExportConfig(quant=QuantConfig(recipe="from-gguf"))).path
    m = _manifest(pkg)
    assert m["validation"]["passed"] and m["quantization"]["readback_passed"]
    assert m["quantization"]["recipe"] == "from-gguf" and m["source"]["gguf"]["from_gguf"]
    stored = _onnx_integers(pkg)
    reader = GGUFReader(path)
    names = {"model.embed_tokens.weight": "token_embd.weight", "lm_head.weight": "output.weight"}
    for i in range(2):
        for hf, gg in (("self_attn.q_proj", "attn_q"), ("self_attn.k_proj", "attn_k"), ("self_attn.v_proj", "attn_v"),
                       ("self_attn.o_proj", "attn_output"), ("mlp.gate_proj", "ffn_gate"), ("mlp.up_proj", "ffn_up")):
            names[f"model.layers.{i}.{hf}.weight"] = f"blk.{i}.{gg}.weight"
    tensors = {t.name: t for t in reader.tensors}
    assert sorted(stored) == sorted(names)
    for hf, gg in names.items():
        q, d = _blocks_by_hand(np.array(tensors[gg].data), tensors[gg].tensor_type)
        sq, ss = stored[hf]
        if ".q_proj." in hf or ".k_proj." in hf:   # the artifact is in HF row order
            sq, ss = permute(sq, 4, 4 if ".q_proj." in hf else 2), permute(ss, 4, 4 if ".q_proj." in hf else 2)
        assert np.array_equal(sq, q), hf
        assert np.array_equal(ss, np.where(d == 0, 1.0, d).astype(np.float32)), hf


def test_from_gguf_tied_int4_embedding(tmp_path):
    """A tied model (no output.weight, as SmolLM2's GGUFs): the int4 embedding table is stored once,
    lm_head reads it, and the ONNX integers are token_embd's Q4_0 blocks."""
    from gguf.constants import GGMLQuantizationType as T

    from slmpack import api
    from slmpack.config import ExportConfig
    from slmpack.quantize_config import QuantConfig
    from tests.gguf.writer import write_gguf
    from tests.tiny_models import write_tiny_model

    ckpt = write_tiny_model(tmp_path / "tied", "llama", tied=True, demo_tokenizer=True, vocab=4096, hidden=64,
                            inter=128, varied=True)
    path = write_gguf(ckpt, tmp_path / "tied-Q4_0.gguf", T.Q4_0)
    pkg = api.export(path, "onnx", tmp_path / "pkg", ExportConfig(quant=QuantConfig(recipe="from-gguf"))).path
    m = _manifest(pkg)
    assert m["validation"]["passed"] and m["quantization"]["readback_passed"] and m["precision"] == "int4"
    assert m["quantization"]["summary"]["tied_tensors"] == 1
    embd = next(t for t in GGUFReader(path).tensors if t.name == "token_embd.weight")
    q, d = _blocks_by_hand(np.array(embd.data), embd.tensor_type)
    sq, ss = _onnx_integers(pkg)["model.embed_tokens.weight"]
    assert np.array_equal(sq, q) and np.array_equal(ss, np.where(d == 0, 1.0, d).astype(np.float32))


def test_from_gguf_on_executorch_and_litert(gguf_of, tmp_path):
    """Q8_0 (int8 weight-only g32) runs on ExecuTorch (f32-qc8w) and LiteRT; the read-back finds the
    file's integers (the 4098-row embedding's scale table is stored zero-padded to 16 bytes)."""
    from slmpack import api
    from slmpack.config import ExportConfig
    from slmpack.quantize_config import QuantConfig

    for target in ("executorch", "tflite"):
        m = api.export(gguf_of("Q8_0"), target, tmp_path / target,
                       ExportConfig(quant=QuantConfig(recipe="from-gguf"))).manifest
        assert m["validation"]["passed"] and m["quantization"]["readback_passed"], target
        assert m["report"]["readback"]["bit_identical"], target
