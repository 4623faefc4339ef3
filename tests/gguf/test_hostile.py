"""Hostile .gguf files: every one is a typed exit-2 error, quickly (no loop over a count the file
cannot hold), with nothing written at --out and no temporary directory left behind."""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from slmpack.errors import BadInputError
from slmpack.exporter.gguf.reader import open_gguf
from slmpack.exporter.gguf.source import materialised


def _s(text: bytes) -> bytes:
    return struct.pack("<Q", len(text)) + text


def build(kvs=(), tensors=(("t", (32,), 0, 0),), data: bytes = b"\0" * 128, *, magic=b"GGUF", version=3,
          n_tensors=None, n_kv=None) -> bytes:
    """A GGUF byte string: ``kvs`` are (key, value bytes incl. type), ``tensors`` (name, ne, type, offset)."""
    head = magic + struct.pack("<IQQ", version, len(tensors) if n_tensors is None else n_tensors,
                               len(kvs) if n_kv is None else n_kv)
    body = b"".join(_s(k) + v for k, v in kvs)
    infos = b"".join(_s(n.encode()) + struct.pack("<I", len(ne)) + struct.pack(f"<{len(ne)}Q", *ne)
                     + struct.pack("<IQ", t, off) for n, ne, t, off in tensors)
    out = head + body + infos
    return out + b"\0" * (-len(out) % 32) + data


STR, ARR, U32 = 8, 9, 4
ARCH = (b"general.architecture", struct.pack("<I", STR) + _s(b"llama"))
CASES = {
    "empty": (b"", "E_GGUF_INVALID"),
    "bad_magic": (build(magic=b"GGUX"), "E_GGUF_INVALID"),
    "truncated_header": (build()[:30], "E_GGUF_INVALID"),
    "truncated_data": (build(data=b"\0" * 64)[:-40], "E_GGUF_INVALID"),
    "huge_tensor_count": (build(n_tensors=2 ** 63), "E_GGUF_INVALID"),
    "tensor_count_past_eof": (build(n_tensors=1000), "E_GGUF_INVALID"),
    "huge_kv_count": (build(n_kv=2 ** 40), "E_GGUF_INVALID"),
    "huge_dims": (build(tensors=(("t", (2 ** 32, 2 ** 32), 0, 0),)), "E_GGUF_INVALID"),
    "zero_dim": (build(tensors=(("t", (32, 0), 0, 0),)), "E_GGUF_INVALID"),
    "five_dims": (build(tensors=(("t", (1, 1, 1, 1, 32), 0, 0),)), "E_GGUF_INVALID"),
    "unknown_type": (build(tensors=(("t", (32,), 99, 0),)), "E_GGUF_UNSUPPORTED"),
    "unsupported_type_q5_0": (build(tensors=(("t", (32,), 6, 0),)), "E_GGUF_UNSUPPORTED"),
    "partial_block": (build(tensors=(("t", (48,), 8, 0),)), "E_GGUF_INVALID"),
    "offset_past_eof": (build(tensors=(("t", (32,), 0, 4096),)), "E_GGUF_INVALID"),
    "unaligned_offset": (build(tensors=(("t", (8,), 0, 4),)), "E_GGUF_INVALID"),
    "overlapping": (build(tensors=(("a", (32,), 0, 0), ("b", (32,), 0, 32))), "E_GGUF_INVALID"),
    "duplicate_name": (build(tensors=(("a", (8,), 0, 0), ("a", (8,), 0, 32))), "E_GGUF_INVALID"),
    "non_utf8_name": (build(tensors=(("t", (8,), 0, 0),)).replace(_s(b"t"), _s(b"\xff")), "E_GGUF_INVALID"),
    "huge_string": ((lambda b: b.replace(_s(b"llama"), struct.pack("<Q", 2 ** 62) + b"llama"))(build(kvs=(ARCH,))),
                    "E_GGUF_INVALID"),
    # GGUFReader alone would loop 2^60 times here (reads past EOF return empty arrays, not errors)
    "array_past_eof": (build(kvs=((b"x", struct.pack("<IIQ", ARR, 0, 2 ** 60)),)), "E_GGUF_INVALID"),
    "nested_array": (build(kvs=((b"x", struct.pack("<IIQIQ", ARR, ARR, 1, 0, 0)),)), "E_GGUF_UNSUPPORTED"),
    "unknown_value_type": (build(kvs=((b"x", struct.pack("<I", 77)),)), "E_GGUF_INVALID"),
    "bad_alignment": (build(kvs=((b"general.alignment", struct.pack("<II", U32, 3)),)), "E_GGUF_INVALID"),
    "version_1": (build(version=1), "E_GGUF_UNSUPPORTED"),
    "big_endian": (build(version=3 << 24), "E_GGUF_UNSUPPORTED"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_header_is_a_typed_error(tmp_path, case):
    data, code = CASES[case]
    path = tmp_path / f"{case}.gguf"
    path.write_bytes(data)
    with pytest.raises(BadInputError) as e:
        with open_gguf(path):
            pass
    assert e.value.code == code, str(e.value)
    assert e.value.exit_code == 2


def _f32(shape, fill=0.0) -> bytes:
    return np.full(shape, fill, np.float32).tobytes()


@pytest.mark.parametrize("case,code", [("architecture", "E_GGUF_UNSUPPORTED"), ("wrong_key_type", "E_GGUF_INVALID"),
                                       ("huge_block_count", "E_GGUF_INVALID"),
                                       ("unknown_tensor", "E_GGUF_UNSUPPORTED"), ("missing_tensor", "E_GGUF_INVALID"),
                                       ("nan", "E_WEIGHTS_NONFINITE"), ("tokenizer", "E_GGUF_UNSUPPORTED")])
def test_bad_models_are_refused(gguf_of, tmp_path, case, code):
    """Valid files that are not a model slmpack reads: built from a real GGUF by rewriting it."""
    import gguf

    src = gguf.GGUFReader(gguf_of("F32"))
    w = gguf.GGUFWriter(str(tmp_path / "m.gguf"), "gpt2" if case == "architecture" else "llama")
    for key, field in src.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        value = field.contents()
        if case == "wrong_key_type" and key == "llama.block_count":
            w.add_string(key, "two")
        elif case == "huge_block_count" and key == "llama.block_count":
            w.add_uint32(key, 2 ** 31)
        elif case == "tokenizer" and key == "tokenizer.ggml.pre":
            w.add_string(key, "some-new-pre")
        elif case == "architecture" and key.startswith("llama."):
            w.add_key_value(key.replace("llama.", "gpt2."), value, field.types[0], field.types[-1] if len(field.types) > 1 else None)
        else:
            w.add_key_value(key, value, field.types[0], field.types[-1] if len(field.types) > 1 else None)
    for t in src.tensors:
        if case == "missing_tensor" and t.name == "blk.1.ffn_up.weight":
            continue
        values = np.array(t.data)
        if case == "nan" and t.name == "output_norm.weight":
            values[3] = np.nan
        w.add_tensor(t.name, values)
    if case == "unknown_tensor":
        w.add_tensor("rope_freqs.weight", np.ones(4, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(BadInputError) as e:
        with materialised(tmp_path / "m.gguf"):
            pass
    assert e.value.code == code, str(e.value)


def test_fifo_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "pipe.gguf")
    with pytest.raises(BadInputError) as e:
        with open_gguf(tmp_path / "pipe.gguf"):
            pass
    assert e.value.code == "E_NOT_REGULAR_FILE"


def test_cli_exit_2_nothing_at_out_no_temp_left(tmp_path):
    (tmp_path / "bad.gguf").write_bytes(CASES["array_past_eof"][0])
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    r = subprocess.run([sys.executable, "-m", "slmpack.cli", "export", str(tmp_path / "bad.gguf"), "--out",
                        str(tmp_path / "o"), "--json"], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "TMPDIR": str(tmp)})
    assert r.returncode == 2, r.stderr
    assert json.loads(r.stdout)["error"] == "E_GGUF_INVALID"
    assert r.stderr.startswith("error[E_GGUF_INVALID]") and r.stderr.strip().count("\n") == 0
    assert not (tmp_path / "o").exists()
    assert not [p for p in tmp.iterdir() if p.name.startswith("slmpack-gguf-")]


def test_from_gguf_needs_a_gguf(tmp_path):
    from slmpack.config import ExportConfig
    from slmpack.exporter import pipeline
    from slmpack.quantize_config import QuantConfig

    with pytest.raises(BadInputError) as e:
        pipeline.export(None, "onnx", tmp_path / "o", ExportConfig(quant=QuantConfig(recipe="from-gguf")))
    assert e.value.code == "E_CONFIG" and not (tmp_path / "o").exists()
    with pytest.raises(BadInputError) as e:
        QuantConfig(recipe="from-gguf", algorithm="gptq")
    assert e.value.code == "E_CONFIG"


def test_from_gguf_on_an_inexact_type_stops_before_any_work(gguf_of, tmp_path):
    from slmpack.config import ExportConfig
    from slmpack.exporter import pipeline
    from slmpack.quantize_config import QuantConfig

    with pytest.raises(BadInputError) as e:
        pipeline.export(gguf_of("Q4_1"), "onnx", tmp_path / "o", ExportConfig(quant=QuantConfig(recipe="from-gguf")))
    assert e.value.code == "E_GGUF_INEXACT" and e.value.exit_code == 2 and not (tmp_path / "o").exists()
