"""RTN against an independent numpy implementation of the documented storage convention."""
import numpy as np
import pytest
import torch

from slmpack.calibration.rtn import dequantize, fake_quantize, quantize_rtn
from slmpack.errors import BadInputError


def numpy_rtn(w: np.ndarray, bits: int, group: int | None, symmetric: bool):
    rows, cols = w.shape
    g = cols if group is None else group
    q = np.zeros_like(w, dtype=np.int64)
    scales = np.zeros((rows, cols // g), dtype=np.float32)
    zps = np.zeros((rows, cols // g), dtype=np.int64)
    for r in range(rows):
        for j in range(cols // g):
            x = w[r, j * g:(j + 1) * g].astype(np.float32)
            if symmetric:
                qmax = 2 ** (bits - 1) - 1
                amax = np.float32(np.abs(x).max())
                s = np.float32(amax / np.float32(qmax)) if amax > 0 else np.float32(1.0)
                q[r, j * g:(j + 1) * g] = np.clip(np.round(x / s), -qmax - 1, qmax)
            else:
                lo, hi = min(np.float32(x.min()), 0), max(np.float32(x.max()), 0)
                s = np.float32((hi - lo) / np.float32(2 ** bits - 1)) if hi > lo else np.float32(1)
                zu = int(np.clip(np.round(-lo / s), 0, 2 ** bits - 1))
                u = np.clip(np.round(x / s) + zu, 0, 2 ** bits - 1)
                q[r, j * g:(j + 1) * g] = u - 2 ** (bits - 1)
                zps[r, j] = zu - 2 ** (bits - 1)
            scales[r, j] = s
    return q, scales, zps


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("group", [None, 32, 64, 128])
@pytest.mark.parametrize("symmetric", [True, False])
def test_rtn_matches_numpy_reference(bits, group, symmetric):
    g = torch.Generator().manual_seed(bits * 1000 + (group or 1) + symmetric)
    w = torch.randn(6, 256, generator=g) * 0.05
    w[1] += 0.03  # an all-positive-ish row stresses the asymmetric zero point
    qw = quantize_rtn(w, bits, group, symmetric)
    q_ref, s_ref, z_ref = numpy_rtn(w.numpy(), bits, group, symmetric)
    n_groups = 1 if group is None else 256 // group
    assert qw.q.dtype == torch.int8 and qw.q.shape == (6, 256)
    assert qw.scale.dtype == torch.float32 and qw.scale.shape == (6, n_groups)
    np.testing.assert_array_equal(qw.q.numpy().astype(np.int64), q_ref)
    np.testing.assert_allclose(qw.scale.numpy(), s_ref, rtol=1e-6)
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    assert int(qw.q.min()) >= lo and int(qw.q.max()) <= hi
    if symmetric:
        assert qw.zero_point is None
        deq_ref = q_ref.reshape(6, n_groups, -1) * s_ref[:, :, None]
    else:
        assert qw.zero_point.dtype == torch.int8
        np.testing.assert_array_equal(qw.zero_point.numpy().astype(np.int64), z_ref)
        deq_ref = (q_ref - np.repeat(z_ref, 256 // n_groups, axis=1)).reshape(6, n_groups, -1) \
            * s_ref[:, :, None]
    np.testing.assert_allclose(qw.dequantize().numpy(), deq_ref.reshape(6, 256), rtol=1e-6,
                               atol=1e-9)
    # error bound: at most half a step per element
    step = np.repeat(s_ref, 256 // n_groups, axis=1)
    assert np.all(np.abs(qw.dequantize().numpy() - w.numpy()) <= step / 2 + 1e-7)


def test_int4_symmetric_hand_computed():
    w = torch.tensor([[0.7, -0.35, 0.1, 0.0], [0.0, 0.0, 0.0, 0.0]])
    qw = quantize_rtn(w, 4, None, True)
    assert qw.scale[0, 0].item() == pytest.approx(0.1)
    assert qw.q[0].tolist() == [7, -4, 1, 0]  # -3.5 rounds half to even -> -4
    assert qw.q[1].tolist() == [0, 0, 0, 0] and qw.scale[1, 0].item() == 1.0


def test_int8_asymmetric_hand_computed():
    w = torch.tensor([[0.0, 0.51, 1.02, 2.55]])
    qw = quantize_rtn(w, 8, None, False)
    assert qw.scale.item() == pytest.approx(0.01)       # (2.55 - 0) / 255
    assert qw.zero_point.item() == -128                  # unsigned zero point 0, shifted
    assert qw.q[0].tolist() == [-128, -77, -26, 127]     # 0, 51, 102, 255 shifted by -128
    torch.testing.assert_close(qw.dequantize(), w, atol=1e-6, rtol=0)


def test_group_must_divide_columns():
    with pytest.raises(BadInputError) as e:
        quantize_rtn(torch.zeros(2, 48), 4, 32, True)
    assert e.value.code == "E_QUANT_GROUP_SIZE"


def test_dequantize_and_fake_quantize_agree():
    w = torch.randn(4, 64, generator=torch.Generator().manual_seed(3))
    qw = quantize_rtn(w, 4, 32, False)
    assert torch.equal(dequantize(qw.q, qw.scale, qw.zero_point, 32),
                       fake_quantize(w, 4, 32, False))
