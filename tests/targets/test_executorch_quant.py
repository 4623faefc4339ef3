"""ExecuTorch int8 weight-only linears (XNNPACK f32-qc8w through ``partition.partitioner``).

* one Linear, lowered the way ``lower.py`` lowers: the program's output against numpy
  ``x @ (q * scale).T`` (the plan's dequantized weight), and the stock partitioner's wrong result
  (scales dropped: ``x @ q.T``) so the regression this encoding fixes stays visible;
* the tiny model through ``slmpack.api.export`` with the ``int8`` preset: ladder against the plan's
  fake-quant reference, the plan's integers and scales read back bit-identical from model.pte,
  and ExecuTorch's TextLLMRunner on the package.
"""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from slmpack import api
from slmpack.calibration.rtn import quantize_rtn
from slmpack.config import ExportConfig
from slmpack.targets.executorch.partition import partitioner
from slmpack.targets.executorch.quantize import _intx_weight

from tests.targets.test_executorch import CFG, assert_text_llm_runner_reproduces, write_model


def _lowered_linear(qw, x: torch.Tensor, stock: bool = False) -> tuple[np.ndarray, int]:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from executorch.runtime import Runtime

    rows, cols = qw.q.shape
    lin = nn.Linear(cols, rows, bias=False)
    lin.weight = nn.Parameter(_intx_weight(qw, activation_dynamic=False), requires_grad=False)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ep = torch.export.export(lin.eval(), (x,))
        edge = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner() if stock else partitioner()])
        et = edge.to_executorch()
    out = Runtime.get().load_program(et.buffer).load_method("forward").execute([x])[0]
    return out.numpy(), len(et.buffer)


def test_int8_weight_only_linear_matches_q_times_scale():
    torch.manual_seed(0)
    rows, cols = 96, 256
    qw = quantize_rtn(torch.randn(rows, cols), bits=8, group_size=None, symmetric=True)
    x = torch.randn(5, cols)
    got, size = _lowered_linear(qw, x)
    q, scale = qw.q.numpy().astype(np.float64), qw.scale.numpy().astype(np.float64)
    want = x.numpy().astype(np.float64) @ (q * scale).T
    rel = np.abs(got - want).max() / np.abs(want).max()
    assert rel < 1e-5, rel
    assert size < rows * cols * 4 // 2      # int8 storage, not an fp32 copy of the weight


def test_stock_partitioner_drops_the_scales():
    """Documents why ``partitioner()`` exists: executorch 1.5.1's stock XnnpackPartitioner runs an
    int8 weight-only linear as ``x @ q.T`` (scales dropped). If this starts failing, executorch
    fixed it and the LinearConfig override may be removable."""
    torch.manual_seed(1)
    qw = quantize_rtn(torch.randn(32, 64), bits=8, group_size=None, symmetric=True)
    x = torch.randn(3, 64)
    got, _ = _lowered_linear(qw, x, stock=True)
    raw = x.numpy() @ qw.q.numpy().astype(np.float32).T
    np.testing.assert_allclose(got, raw, rtol=1e-4, atol=1e-3)


@pytest.fixture(scope="module")
def int8_pkg(tmp_path_factory):
    from slmpack.quantize_config import QuantConfig

    tiny = write_model(tmp_path_factory.mktemp("etq") / "tiny")
    cfg = ExportConfig(trace=CFG.trace, validation=CFG.validation,
                       quant=QuantConfig(recipe="int8", calib_windows=2, calib_window_tokens=32))
    return api.export(tiny, "executorch", tmp_path_factory.mktemp("etqpkg") / "pkg", cfg)


@pytest.mark.slow
def test_int8_preset_package_passes_and_reads_back(int8_pkg):
    v = int8_pkg.validation
    assert int8_pkg.passed, json.dumps(v)[:3000]
    # fp32 math on the plan's own values: the same bound as an fp32 package
    assert max(v["vectors"]["prefill_max_abs_diff"], v["vectors"]["decode_max_abs_diff"]) < 1e-4
    assert v["heldout"]["top1_agreement"] == 1.0 and v["greedy"]["match"]
    m = int8_pkg.manifest
    # exact encodings: the full fp32 record (the bound, every held-out token agrees, greedy exact)
    assert m["tolerance"] == {"atol": 1e-4, "rtol": 1e-4, "min_top1": 1.0, "greedy_exact": True}
    enc = m["report"]["quantization"]["encodings"]
    assert set(enc.values()) == {"int8_weight_only", "embedding_int8"}
    assert sum(e == "int8_weight_only" for e in enc.values()) == 7 + 1      # layer linears + lm_head
    # every weight stored as int8 (+ scales): about a quarter of the fp32 bytes
    assert m["report"]["pte_bytes"] < 0.3 * 4 * m["model"]["num_parameters"], m["report"]["pte_bytes"]
    rep = m["report"]["delegation"]
    assert "aten.linear.default" not in rep["portable_ops"]
    assert not any("dequantize" in op for op in rep["portable_ops"])
    rb = m["report"]["readback"]
    assert rb["passed"] and rb["integers_identical"] and rb["bit_identical"], rb["problems"]
    assert {t["encoding"] for t in rb["tensors"].values()} == {"int8_weight_only", "embedding_int8"}
    emb = rb["tensors"]["model.embed_tokens.weight"]
    assert emb["integers_found"] and emb["scales_found"]


@pytest.mark.slow
def test_int8_preset_text_llm_runner(int8_pkg):
    assert_text_llm_runner_reproduces(int8_pkg)
