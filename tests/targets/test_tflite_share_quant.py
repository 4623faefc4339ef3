"""One copy of each quantization vector across a .tflite's signature subgraphs
(``targets/tflite/share_quant.py``): smaller, same numbers, same tensor tables."""
from __future__ import annotations

import numpy as np
import pytest

from slmpack import api
from slmpack.config import ExportConfig, TraceConfig
from slmpack.targets.tflite.options import TFLiteOptions
from slmpack.targets.tflite.share_quant import share_quantization_vectors
from tests.tiny_models import write_tiny_model

CFG = ExportConfig(trace=TraceConfig(max_context=48, max_prompt=16), validate=False)
OPTS = TFLiteOptions(prefill_lengths=(4, 16))


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    root = tmp_path_factory.mktemp("share")
    model = write_tiny_model(root / "m", "llama", seed=3, vocab=256, hidden=64, layers=2, heads=4, max_pos=64)
    fp32 = api.export(model, "tflite", root / "fp32", CFG, OPTS)
    int4 = api.export(model, "tflite", root / "int4", CFG, OPTS, quant="int4")
    return fp32, int4


def _logits(data: bytes) -> dict[str, np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    it, out = Interpreter(model_content=data), {}
    for name in it.get_signature_list():
        runner = it.get_signature_runner(name)
        feed = {}
        for k, d in runner.get_input_details().items():
            if k == "tokens":
                feed[k] = (np.arange(int(np.prod(d["shape"]))).reshape(d["shape"]) * 7 % 256).astype(d["dtype"])
            elif k == "input_pos":
                feed[k] = np.arange(d["shape"][0]).astype(d["dtype"])
            else:
                feed[k] = np.random.default_rng(0).standard_normal(d["shape"]).astype(d["dtype"])
        out[name] = runner(**feed)["logits"]
    return out


def _quant_params(data: bytes) -> list:
    from ai_edge_litert import schema_py_generated as s

    m = s.ModelT.InitFromPackedBuf(data, 0)
    return [(g.name, t.name, None if t.quantization is None else
             (list(np.asarray(t.quantization.scale if t.quantization.scale is not None else [])),
              list(np.asarray(t.quantization.zeroPoint if t.quantization.zeroPoint is not None else [])),
              t.quantization.quantizedDimension))
            for g in m.subgraphs for t in g.tensors]


def _repack(data: bytes) -> bytes:
    """The schema's own serialisation: a vector per table that references one (what litert-torch
    and the plan encoder write)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    builder = flatbuffers.Builder(len(data))
    builder.Finish(s.ModelT.InitFromPackedBuf(data, 0).Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def test_shared_vectors_keep_every_number(packages):
    _, int4 = packages
    repeated = _repack((int4.path / "model.tflite").read_bytes())   # one copy per subgraph again
    shared, rep = share_quantization_vectors(repeated)
    assert rep.bytes_before == len(repeated) and rep.bytes_after == len(shared)
    assert rep.distinct < rep.vectors / 2                     # 3 signatures share one copy
    assert len(shared) < 0.8 * len(repeated)
    assert _quant_params(shared) == _quant_params(repeated)   # every tensor reads the same values
    want, got = _logits(repeated), _logits(shared)
    assert set(got) == {"prefill_4", "prefill_16", "decode"}
    assert all(np.array_equal(got[k], want[k]) for k in want)
    again, rep2 = share_quantization_vectors(shared)          # a fixed point
    assert again == shared and rep2.distinct == rep.distinct


def test_the_export_ships_the_shared_form(packages):
    fp32, int4 = packages
    rep = int4.manifest["report"]["shared_quantization_vectors"]
    assert rep["bytes_after"] == (int4.path / "model.tflite").stat().st_size < rep["bytes_before"]
    assert "shared_quantization_vectors" not in fp32.manifest["report"]    # nothing to share in fp32
    data = (fp32.path / "model.tflite").read_bytes()
    assert share_quantization_vectors(data) == (data, None)
