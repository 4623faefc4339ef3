"""passes/fuse_sdpa.py on hand-built MIL programs: what it fuses, what it leaves alone, and that the
fused program computes what the written-out attention did (through our interpreter)."""
from __future__ import annotations

import math

import numpy as np
import pytest

ct = pytest.importorskip("coremltools")
from coremltools.converters.mil import Builder as mb  # noqa: E402
from coremltools.converters.mil.mil import types  # noqa: E402

from slmpack.runtime.mil import Interpreter, load_mlpackage  # noqa: E402
from slmpack.targets.coreml.passes import run_pass  # noqa: E402
from slmpack.targets.coreml.passes.fuse_sdpa import fuse_sdpa  # noqa: E402

RNG = np.random.default_rng(1)
H, L, S, E = 4, 5, 9, 8
MASK = np.where(np.arange(S)[None, :] <= np.arange(L)[:, None] + S - L, 0.0, -np.inf).astype(np.float32)


def _attention(q, k, v, *, scale=E ** -0.5, dtype="fp32", softmax_fp32=False, extra_use=False, mask=MASK):
    """The chain coremltools makes of reference.Attention (see the pass's docstring)."""
    if dtype == "fp16":
        q, k, v = (mb.cast(x=t, dtype="fp16") for t in (q, k, v))
        mask = mask.astype(np.float16)
        scale = np.float16(scale)
    s = mb.add(x=mb.mul(x=mb.matmul(x=q, y=k, transpose_y=True), y=scale), y=mask)
    if softmax_fp32:
        s = mb.cast(x=s, dtype="fp32")
    p = mb.softmax(x=s, axis=-1)
    if softmax_fp32:
        p = mb.cast(x=p, dtype=dtype)
    out = mb.matmul(x=p, y=v)
    if dtype == "fp16":
        out = mb.cast(x=out, dtype="fp32")
    return (out, mb.reduce_max(x=p, axes=[-1])) if extra_use else out


def _program(target=ct.target.iOS18, **kw):
    specs = [mb.TensorSpec((1, H, L, E), types.fp32), mb.TensorSpec((1, H, S, E), types.fp32),
             mb.TensorSpec((1, H, S, E), types.fp32)]
    return mb.program(input_specs=specs, opset_version=target)(lambda q, k, v: _attention(q, k, v, **kw))


def _ops(prog) -> list[str]:
    return [op.op_type for op in prog.functions["main"].operations]


def _run(prog, tmp_path, feeds, target=ct.target.iOS18):
    model = ct.convert(prog, convert_to="mlprogram", pass_pipeline=ct.PassPipeline.EMPTY,
                       compute_precision=ct.precision.FLOAT32, minimum_deployment_target=target,
                       skip_model_load=True)
    path = tmp_path / f"m{len(list(tmp_path.iterdir()))}.mlpackage"
    model.save(str(path))
    interp = Interpreter(load_mlpackage(path))
    return [np.asarray(o, np.float32) for o in interp.run(dict(zip("qkv", feeds))).values()], interp


FEEDS = [RNG.standard_normal(s).astype(np.float32) for s in ((1, H, L, E), (1, H, S, E), (1, H, S, E))]


@pytest.mark.parametrize("kw", [{}, {"dtype": "fp16"}, {"dtype": "fp16", "softmax_fp32": True},
                                {"scale": 0.1}], ids=["fp32", "fp16", "fp16-softmax-fp32", "other-scale"])
def test_the_attention_chain_becomes_one_op_with_the_same_values(tmp_path, kw):
    (want,), _ = _run(_program(**kw), tmp_path, FEEDS)
    prog = _program(**kw)
    assert run_pass(prog, fuse_sdpa) == 1
    ops = _ops(prog)
    assert ops.count("scaled_dot_product_attention") == 1
    assert not {"softmax", "matmul", "add"} & set(ops)
    assert ("mul" in ops) == ("scale" in kw)                   # another scale is folded into q
    (got,), interp = _run(prog, tmp_path, FEEDS)
    assert interp.op_counts["scaled_dot_product_attention"] == 1
    tol = 5e-3 if kw.get("dtype") == "fp16" else 1e-5
    np.testing.assert_allclose(got, want, atol=tol)
    # and against an independent numpy reference
    q, k, v = FEEDS
    s = q @ np.swapaxes(k, -1, -2) * kw.get("scale", 1 / math.sqrt(E)) + MASK
    p = np.exp(s - s.max(-1, keepdims=True))
    np.testing.assert_allclose(got, (p / p.sum(-1, keepdims=True)) @ v, atol=tol)


def test_no_fusion_when_an_intermediate_has_another_user():
    prog = _program(extra_use=True)
    assert run_pass(prog, fuse_sdpa) == 0
    assert "softmax" in _ops(prog) and "scaled_dot_product_attention" not in _ops(prog)


def test_no_fusion_below_ios18():
    prog = _program(target=ct.target.iOS17)
    assert run_pass(prog, fuse_sdpa) == 0
    assert "softmax" in _ops(prog)


def test_no_fusion_without_the_transposed_key_matmul():
    def build(q, k, v):   # softmax(q @ k) with k already [E, S]: not the attention pattern
        s = mb.add(x=mb.mul(x=mb.matmul(x=q, y=mb.transpose(x=k, perm=[0, 1, 3, 2])), y=E ** -0.5), y=MASK)
        return mb.matmul(x=mb.softmax(x=s, axis=-1), y=v)

    specs = [mb.TensorSpec((1, H, L, E), types.fp32), mb.TensorSpec((1, H, S, E), types.fp32),
             mb.TensorSpec((1, H, S, E), types.fp32)]
    prog = mb.program(input_specs=specs, opset_version=ct.target.iOS18)(build)
    assert run_pass(prog, fuse_sdpa) == 0


def test_default_ios18_fp16_export_fuses_every_layer_and_passes_the_ladder(tiny_llama, tmp_path):
    """The default options (iOS 18, fp16 compute): fp16 chain (scale const rounded to fp16) fused too."""
    from slmpack import api
    from slmpack.config import ExportConfig, TraceConfig
    from slmpack.targets.coreml.options import CoreMLOptions

    cfg = ExportConfig(trace=TraceConfig(max_context=48, max_prompt=16))
    pkg = api.export(tiny_llama, "coreml", tmp_path / "fp16", cfg, CoreMLOptions())
    report, v = pkg.manifest["report"], pkg.validation
    assert report["attention_blocks_fused"] == "2/2" and report["passes"]["fuse_sdpa"] == 2
    assert "scaled_dot_product_attention" in report["op_types"] and "softmax" not in report["op_types"]
    assert v["passed"] and v["heldout"]["top1_agreement"] >= 0.99, v
