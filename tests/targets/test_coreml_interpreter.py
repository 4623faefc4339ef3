"""The numpy MIL interpreter, op by op, against numpy / torch references.

Each case builds a small MIL program with coremltools' builder, serializes it to a real
``.mlpackage`` (Model.proto + weights/weight.bin, so parsing and the blob reader are exercised too)
and runs it through the interpreter. Large constants (>= 10 values) land in the weight blob file.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

ct = pytest.importorskip("coremltools")
from coremltools.converters.mil import Builder as mb  # noqa: E402
from coremltools.converters.mil.mil import types  # noqa: E402

from slmpack.runtime.mil import (Interpreter, MILRuntimeError, UnsupportedOpError,  # noqa: E402
                                                    load_mlpackage)
from slmpack.runtime.mil.blob import BlobFile  # noqa: E402
from slmpack.runtime.mil.dtypes import from_name  # noqa: E402

RNG = np.random.default_rng(0)
IOS17, IOS18 = ct.target.iOS17, ct.target.iOS18


def _save(prog, path, target):
    model = ct.convert(prog, convert_to="mlprogram", pass_pipeline=ct.PassPipeline.EMPTY,
                       compute_precision=ct.precision.FLOAT32, minimum_deployment_target=target,
                       skip_model_load=True)
    model.save(str(path))
    return path


def run(tmp_path, build, inputs: dict, target=IOS18, states=None):
    """build(<one parameter per input, then per state, named like the keys>) -> output var(s)."""
    dtypes = {np.float32: types.fp32, np.int32: types.int32, np.float16: types.fp16}
    specs = [mb.TensorSpec(v.shape, dtype=dtypes[v.dtype.type]) for v in inputs.values()]
    specs += [mb.StateTensorSpec(s.shape, dtype=types.fp16) for s in (states or {}).values()]
    prog = mb.program(input_specs=specs, opset_version=target)(build)
    interp = Interpreter(load_mlpackage(_save(prog, tmp_path / "t.mlpackage", target)))
    out = interp.run(inputs, states)
    return list(out.values()), interp


def f32(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def test_linear_matmul_softmax_against_torch(tmp_path):
    x, w, b = f32(1, 5, 16), f32(12, 16), f32(12)
    y = f32(1, 7, 12)
    (lin, mm, sm), _ = run(tmp_path, lambda x, y: (
        mb.linear(x=x, weight=w, bias=b),
        mb.matmul(x=mb.linear(x=x, weight=w, bias=b), y=y, transpose_y=True),
        mb.softmax(x=y, axis=-1)), {"x": x, "y": y})
    t_lin = torch.nn.functional.linear(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b))
    np.testing.assert_allclose(lin, t_lin.numpy(), atol=1e-5)
    np.testing.assert_allclose(mm, (t_lin @ torch.from_numpy(y).transpose(1, 2)).numpy(), atol=1e-4)
    np.testing.assert_allclose(sm, torch.softmax(torch.from_numpy(y), -1).numpy(), atol=1e-6)


def test_rmsnorm_ops_silu_pow_rsqrt_reduce(tmp_path):
    x = f32(2, 3, 8)
    (silu, norm, prod), _ = run(tmp_path, lambda x: (
        mb.silu(x=x),
        mb.mul(x=x, y=mb.rsqrt(x=mb.add(x=mb.reduce_mean(x=mb.pow(x=x, y=2.0), axes=[-1], keep_dims=True),
                                        y=1e-5), epsilon=1e-12)),
        mb.reduce_prod(x=mb.shape(x=x))), {"x": x})
    t = torch.from_numpy(x)
    np.testing.assert_allclose(silu, torch.nn.functional.silu(t).numpy(), atol=1e-6)
    np.testing.assert_allclose(norm, (t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + 1e-5)).numpy(), atol=1e-5)
    assert int(prod) == 48


def test_gelu_modes_and_tanh_against_torch(tmp_path):
    x = f32(2, 3, 8) * 2
    (exact, approx, sig, th), _ = run(tmp_path, lambda x: (
        mb.gelu(x=x), mb.gelu(x=x, mode="TANH_APPROXIMATION"), mb.gelu(x=x, mode="SIGMOID_APPROXIMATION"),
        mb.tanh(x=x)), {"x": x})
    t = torch.from_numpy(x)
    # fp32 math on |x| < ~8: a few ulps apart from torch's kernels (vectorized exp / tanh / erf differ by CPU)
    np.testing.assert_allclose(exact, torch.nn.functional.gelu(t).numpy(), rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(approx, torch.nn.functional.gelu(t, approximate="tanh").numpy(), rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(sig, (t * torch.sigmoid(1.702 * t)).numpy(), rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(th, torch.tanh(t).numpy(), rtol=1e-6, atol=1e-6)
    assert exact.dtype == np.float32


def _layer_norm_reference(x, axes, gamma=None, beta=None, eps=1e-5):
    """numpy, float64: (x - E[x]) / sqrt(Var[x] + eps) * gamma + beta over ``axes`` (population variance);
    gamma / beta have shape x.shape[sorted(axes)]."""
    x = np.asarray(x, np.float64)
    axes = tuple(sorted(a % x.ndim for a in axes))
    bshape = [x.shape[i] if i in axes else 1 for i in range(x.ndim)]
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    out = (x - mean) / np.sqrt(var + eps)
    out = out * (1.0 if gamma is None else np.reshape(gamma, bshape))
    return out + (0.0 if beta is None else np.reshape(beta, bshape))


def test_layer_norm_against_numpy_formula_and_torch(tmp_path):
    x = f32(2, 3, 4, 8) * 3 + 1.5                   # an offset mean, so centring matters
    g, b = 1 + 0.1 * f32(8), 0.1 * f32(8)
    g2 = 1 + 0.1 * f32(4, 8)                        # axes [-1, 2] (unordered): gamma is x.shape[2:4]
    (last, unordered, bare, everything), _ = run(tmp_path, lambda x: (
        mb.layer_norm(x=x, axes=[-1], gamma=g, beta=b, epsilon=1e-12),
        mb.layer_norm(x=x, axes=[-1, 2], gamma=g2, epsilon=1e-3),
        mb.layer_norm(x=x, axes=[1]),               # no gamma / beta, default epsilon 1e-5
        mb.layer_norm(x=x, axes=[0, 1, 2, 3])), {"x": x})
    np.testing.assert_allclose(last, _layer_norm_reference(x, [-1], g, b, 1e-12), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(unordered, _layer_norm_reference(x, [2, 3], g2, None, 1e-3), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bare, _layer_norm_reference(x, [1]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(everything, _layer_norm_reference(x, range(4)), rtol=1e-5, atol=1e-5)
    t = torch.nn.functional.layer_norm(torch.from_numpy(x), (8,), torch.from_numpy(g), torch.from_numpy(b), 1e-12)
    np.testing.assert_allclose(last, t.numpy(), rtol=1e-5, atol=1e-5)
    assert not np.allclose(bare, last, atol=1e-2)   # the axes really differ


def test_layer_norm_fp16_input_fp32_params_is_rounded_once(tmp_path):
    """iOS17: x in fp16, gamma / beta / epsilon in fp32; fp32 arithmetic, one fp16 rounding of the result."""
    x, g, b = f32(3, 16) * 4, 1 + 0.1 * f32(16), 0.1 * f32(16)
    (h,), _ = run(tmp_path, lambda x: mb.layer_norm(x=mb.cast(x=x, dtype="fp16"), axes=[-1], gamma=g, beta=b,
                                                  epsilon=np.float32(1e-5)), {"x": x}, target=IOS17)
    assert h.dtype == np.float16
    want = _layer_norm_reference(x.astype(np.float16), [-1], g, b).astype(np.float16)
    # fp32 vs float64 arithmetic before the rounding: at most one fp16 ulp apart (2^-10 relative)
    np.testing.assert_allclose(h.astype(np.float32), want.astype(np.float32), rtol=2 ** -10, atol=2 ** -14)


def test_erf_matches_math_erf_to_double_precision():
    import math

    from slmpack.runtime.mil.special import erf

    x = np.concatenate([np.linspace(-30, 30, 200_001), [0.0, 0.46875, -0.46875, 4.0, -4.0, 26.543, np.inf, -np.inf]])
    want = np.array([math.erf(v) for v in x])
    np.testing.assert_allclose(erf(x), want, rtol=4 * np.finfo(np.float64).eps, atol=0)   # |erf| <= 1: a few ulps


def test_pooling_ops_reduce_l2_norm_fill_like(tmp_path):
    x = f32(2, 5, 8)
    (l2, l2k, zeros, full), _ = run(tmp_path, lambda x: (
        mb.reduce_l2_norm(x=x, axes=[1]),
        mb.reduce_l2_norm(x=x, axes=[-1], keep_dims=True),
        mb.fill_like(ref_tensor=x),
        mb.fill_like(ref_tensor=x, value=np.float32(-1e9))), {"x": x})
    np.testing.assert_allclose(l2, np.sqrt((x.astype(np.float64) ** 2).sum(1)), rtol=1e-6)
    np.testing.assert_allclose(l2k, np.linalg.norm(x, axis=-1, keepdims=True), rtol=1e-6)
    assert l2k.shape == (2, 5, 1) and l2.shape == (2, 8)
    np.testing.assert_array_equal(zeros, np.zeros_like(x))
    np.testing.assert_array_equal(full, np.full_like(x, -1e9))


def test_topk_values_indices_and_ties_against_torch(tmp_path):
    x = f32(3, 4, 6)
    x[0, 0, [1, 4]] = 9.0                        # a tie at the top: the lower index first, as torch.topk
    x[1, 2, [0, 2, 5]] = -9.0                    # a tie at the bottom (ascending): lower indices first
    (v, i, va, ia), _ = run(tmp_path, lambda x: (*mb.topk(x=x, k=3), *mb.topk(x=x, k=2, axis=-1, ascending=True)),
                            {"x": x})
    tv, ti = torch.topk(torch.from_numpy(x), 3, dim=-1)
    np.testing.assert_array_equal(v, tv.numpy())
    np.testing.assert_array_equal(i, ti.numpy())
    assert i.dtype == np.int32 and i[0, 0, :2].tolist() == [1, 4]
    si = np.argsort(x, axis=-1, kind="stable")[..., :2]     # torch's smallest-k tie order is not stable
    np.testing.assert_array_equal(ia, si)
    np.testing.assert_array_equal(va, np.take_along_axis(x, si, axis=-1))
    assert ia[1, 2].tolist() == [0, 2]


def test_gather_select_compare_minimum_real_div(tmp_path):
    table = f32(10, 4)
    idx = np.array([[3, 0, 9]], dtype=np.int32)
    (g, sel, mn, rd), _ = run(tmp_path, lambda i: (
        mb.gather(x=table, indices=i, axis=0),
        mb.select(cond=mb.greater_equal(x=i, y=2), a=i, b=mb.add(x=i, y=100)),
        mb.minimum(x=i, y=5),
        mb.real_div(x=mb.mul(x=i, y=4), y=2)), {"i": idx})
    np.testing.assert_array_equal(g, table[idx])
    np.testing.assert_array_equal(sel, np.where(idx >= 2, idx, idx + 100))
    np.testing.assert_array_equal(mn, np.minimum(idx, 5))
    np.testing.assert_array_equal(rd, idx * 2)


def test_gather_out_of_range_is_an_error_not_garbage(tmp_path):
    with pytest.raises(MILRuntimeError, match="out of range"):
        run(tmp_path, lambda i: mb.gather(x=f32(10, 4), indices=i, axis=0), {"i": np.array([10], np.int32)})


def test_shape_ops_reshape_transpose_expand_tile_concat(tmp_path):
    x = f32(1, 6, 4)
    (r, t, e, tl, c, ci), _ = run(tmp_path, lambda x: (
        mb.reshape(x=x, shape=[1, -1, 2, 0]),                   # iOS17: 0 copies the rightmost-aligned dim
        mb.transpose(x=x, perm=[0, 2, 1]),
        mb.expand_dims(x=x, axes=[1]),
        mb.tile(x=x, reps=[1, 1, 2]),
        mb.concat(values=[mb.gather(x=mb.shape(x=x), indices=1, axis=0), np.int32(7)], axis=0),
        mb.concat(values=[x, x], axis=2, interleave=True)), {"x": x})
    np.testing.assert_array_equal(r, x.reshape(1, 3, 2, 4))
    np.testing.assert_array_equal(t, x.transpose(0, 2, 1))
    assert e.shape == (1, 1, 6, 4)
    np.testing.assert_array_equal(tl, np.tile(x, (1, 1, 2)))
    np.testing.assert_array_equal(c, [6, 7])                  # scalars concatenate as length-1 vectors
    np.testing.assert_array_equal(ci, np.stack([x, x], axis=3).reshape(1, 6, 8))


def test_slice_by_index_masks_and_squeeze(tmp_path):
    x = f32(2, 5, 8)
    (a, b), _ = run(tmp_path, lambda x: (
        mb.slice_by_index(x=x, begin=[0, 1, 4], end=[0, 4, 0], end_mask=[True, False, True]),
        mb.slice_by_index(x=x, begin=[1, 0, -3], end=[0, 5, 8], stride=[1, 2, 1], squeeze_mask=[True, False, False])),
        {"x": x})
    np.testing.assert_array_equal(a, x[:, 1:4, 4:])
    np.testing.assert_array_equal(b, x[1, 0:5:2, -3:8])


def test_slice_update_and_scatter_write_a_cache_window(tmp_path):
    cache, new = f32(1, 2, 16, 4), f32(1, 2, 3, 4)
    pos = np.array([5], np.int32)

    def build(c, n, p):
        start = mb.concat(values=[0, 0, mb.squeeze(x=p), 0], axis=0)
        end = mb.concat(values=[1, 2, mb.add(x=mb.squeeze(x=p), y=3), 4], axis=0)
        flat_idx = mb.range_1d(start=mb.mul(x=mb.squeeze(x=p), y=4), end=mb.mul(x=mb.add(x=mb.squeeze(x=p), y=3), y=4),
                               step=1)
        scattered = mb.scatter(data=mb.reshape(x=c, shape=[2, 64]), indices=flat_idx,
                               updates=mb.reshape(x=n, shape=[2, 12]), axis=1, mode="update")
        return mb.slice_update(x=c, update=n, begin=start, end=end), scattered

    (upd, sc), _ = run(tmp_path, build, {"c": cache, "n": new, "p": pos})
    want = cache.copy()
    want[:, :, 5:8] = new
    np.testing.assert_array_equal(upd, want)
    np.testing.assert_array_equal(sc, want.reshape(2, 64))


def test_casts_fill_and_fp16_rounding_points(tmp_path):
    x = f32(3, 5) * 3
    ids = np.array([[1, 2, 3]], np.int32)
    (h, back, u16, fl), _ = run(tmp_path, lambda x, i: (
        mb.mul(x=mb.cast(x=x, dtype="fp16"), y=np.float16(1.0009765625)),   # computed in fp32, stored fp16
        mb.cast(x=mb.cast(x=x, dtype="fp16"), dtype="fp32"),
        mb.cast(x=i, dtype="uint16"),
        mb.fill(shape=mb.shape(x=x), value=-np.inf)), {"x": x, "i": ids}, target=IOS17)
    assert h.dtype == np.float16
    np.testing.assert_array_equal(u16, ids)        # int32 -> uint16 -> int32 (Core ML has no uint16 outputs)
    np.testing.assert_array_equal(back, x.astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(h, (x.astype(np.float16).astype(np.float32) * np.float32(1.0009765625))
                                  .astype(np.float16))
    assert np.all(np.isneginf(fl)) and fl.shape == x.shape


def test_states_read_write_round_to_fp16(tmp_path):
    val = f32(2, 8)

    def build(v, s):
        old = mb.read_state(input=s)
        new = mb.add(x=old, y=mb.cast(x=v, dtype="fp16"))
        mb.coreml_update_state(state=s, value=new)
        return mb.cast(x=old, dtype="fp32")

    state = {"s": np.zeros((2, 8), np.float16)}
    (first,), interp = run(tmp_path, build, {"v": val}, states=state)
    assert [s.name for s in interp.state_specs] == ["s"]
    np.testing.assert_array_equal(first, 0)
    np.testing.assert_array_equal(state["s"], val.astype(np.float16))       # written in place, as fp16
    second = interp.run({"v": val}, state)
    np.testing.assert_array_equal(list(second.values())[0], val.astype(np.float16).astype(np.float32))


@pytest.mark.parametrize("bits,group", [(4, 8), (8, 16), (8, None)])
def test_constexpr_blockwise_shift_scale_matches_plan_dequantization(tmp_path, bits, group):
    rows, cols = 6, 32
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    q = RNG.integers(lo, hi + 1, (rows, cols)).astype(np.int8)
    groups = 1 if group is None else cols // group
    scale = RNG.uniform(0.01, 0.1, (rows, groups)).astype(np.float32)
    zp = RNG.integers(lo, hi + 1, (rows, groups)).astype(np.int8)
    dt = types.np_int4_dtype if bits == 4 else np.int8
    x = f32(1, cols)
    (out,), interp = run(tmp_path, lambda x: mb.linear(
        x=x, weight=mb.constexpr_blockwise_shift_scale(data=q.astype(dt), scale=scale, offset=zp.astype(dt))),
        {"x": x})
    w = ((q.astype(np.float32).reshape(rows, groups, -1) - zp[:, :, None]) * scale[:, :, None]).reshape(rows, cols)
    np.testing.assert_allclose(out, x @ w.T, atol=1e-5)
    assert interp.op_counts["constexpr_blockwise_shift_scale"] == 1


def test_constexpr_affine_dequantize_and_lut(tmp_path):
    q = RNG.integers(-128, 128, (4, 12)).astype(np.int8)
    scale, zp = RNG.uniform(0.01, 0.1, 4).astype(np.float32), RNG.integers(-5, 5, 4).astype(np.int8)
    idx = RNG.integers(0, 16, (4, 12)).astype(np.uint8)
    lut = f32(4, 3, 16, 1)                                      # one 16-entry table per (row, 4-column block)
    (aff, dense), _ = run(tmp_path, lambda x: (
        mb.add(x=x, y=mb.constexpr_affine_dequantize(quantized_data=q, scale=scale, zero_point=zp, axis=0)),
        mb.add(x=x, y=mb.constexpr_lut_to_dense(indices=idx.astype(types.np_uint4_dtype), lut=lut))),
        {"x": np.zeros((4, 12), np.float32)})
    np.testing.assert_allclose(aff, (q.astype(np.float32) - zp[:, None]) * scale[:, None], atol=1e-7)
    rows, cols = np.meshgrid(np.arange(4), np.arange(12) // 4, indexing="ij")
    np.testing.assert_array_equal(dense, lut[rows, cols, idx, 0])


def test_unsupported_op_raises_typed_error_naming_it(tmp_path):
    with pytest.raises(UnsupportedOpError, match="'erf'") as e:
        run(tmp_path, lambda x: mb.erf(x=x), {"x": f32(3)})
    assert e.value.code == "E_COREML_OP_UNSUPPORTED" and e.value.op_type == "erf"


def test_blob_reader_agrees_with_coremltools_storage(tmp_path):
    from coremltools.libmilstoragepython import _BlobStorageReader, _BlobStorageWriter

    path = tmp_path / "w.bin"
    w = _BlobStorageWriter(str(path))
    vals4 = RNG.integers(-8, 8, 37).astype(np.int8)
    off4 = w.write_int4_data(vals4)
    vals16 = f32(11).astype(np.float16)
    off16 = w.write_fp16_data(vals16.view(np.uint16))
    del w
    blob = BlobFile(path)
    np.testing.assert_array_equal(blob.read(off4, from_name("int4"), (37,)), vals4)
    np.testing.assert_array_equal(blob.read(off16, from_name("fp16"), (11,)), vals16)
    theirs = _BlobStorageReader(str(path)).read_int4_data(off4)
    assert len(blob.entries()) == 2 and theirs is not None


def _sdpa_reference(q, k, v, mask=None):
    """numpy: softmax(q k^T / sqrt(E) + mask) v, a bool mask meaning True = attend."""
    q, k, v = (np.asarray(t, np.float64) for t in (q, k, v))
    s = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    if mask is not None:
        s = np.where(mask, s, -np.inf) if mask.dtype == np.bool_ else s + mask
    p = np.exp(s - s.max(-1, keepdims=True))
    return (p / p.sum(-1, keepdims=True)) @ v


def test_scaled_dot_product_attention_float_and_bool_masks(tmp_path):
    q, k, v = f32(1, 4, 5, 8), f32(1, 4, 7, 8), f32(1, 4, 7, 6)
    causal = np.arange(7)[None, :] <= np.arange(5)[:, None] + 2           # [L, S], every row attends somewhere
    additive = np.where(causal, 0.0, -np.inf).astype(np.float32)
    bool4d = RNG.random((1, 4, 5, 7)) < 0.6
    bool4d[..., 0] = True
    (plain, fmask, bmask, h), interp = run(tmp_path, lambda q, k, v: (
        mb.scaled_dot_product_attention(query=q, key=k, value=v),
        mb.scaled_dot_product_attention(query=q, key=k, value=v, attn_mask=additive),
        mb.scaled_dot_product_attention(query=q, key=k, value=v, attn_mask=bool4d),
        mb.scaled_dot_product_attention(query=mb.cast(x=q, dtype="fp16"), key=mb.cast(x=k, dtype="fp16"),
                                        value=mb.cast(x=v, dtype="fp16"), attn_mask=additive.astype(np.float16))),
        {"q": q, "k": k, "v": v})
    assert interp.op_counts["scaled_dot_product_attention"] == 4
    np.testing.assert_allclose(plain, _sdpa_reference(q, k, v), atol=1e-5)
    np.testing.assert_allclose(fmask, _sdpa_reference(q, k, v, additive), atol=1e-5)
    np.testing.assert_allclose(bmask, _sdpa_reference(q, k, v, bool4d), atol=1e-5)
    assert not np.allclose(fmask, plain, atol=1e-3) and not np.allclose(bmask, plain, atol=1e-3)
    # fp16 program: fp16 inputs, fp32 arithmetic inside the op, the result rounded to fp16
    assert h.dtype == np.float16
    want16 = _sdpa_reference(*(t.astype(np.float16) for t in (q, k, v)), additive).astype(np.float16)
    np.testing.assert_allclose(h.astype(np.float32), want16.astype(np.float32), atol=2e-3)
    torch_ref = torch.nn.functional.scaled_dot_product_attention(
        torch.from_numpy(q), torch.from_numpy(k), torch.from_numpy(v), attn_mask=torch.from_numpy(bool4d))
    np.testing.assert_allclose(bmask, torch_ref.numpy(), atol=1e-5)
