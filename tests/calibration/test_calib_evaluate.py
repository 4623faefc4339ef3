"""Perplexity, KL and top-1 agreement against direct numpy computations."""
import math

import numpy as np
import pytest
import torch

from slmpack.calibration.evaluate import compare_logits, mean_kl, perplexity, top1_agreement
from slmpack.errors import BadInputError


def _np_logsoftmax(x):
    x = x.astype(np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def test_metrics_match_numpy():
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(2, 6, 11, generator=g) * 3
    test = ref + 0.5 * torch.randn(2, 6, 11, generator=g)
    ids = torch.randint(0, 11, (2, 6), generator=g)
    lr, lt = _np_logsoftmax(ref.numpy()), _np_logsoftmax(test.numpy())
    kl = (np.exp(lr) * (lr - lt)).sum(-1).mean()
    nll = -np.take_along_axis(lr[:, :-1], ids[:, 1:, None].numpy(), -1).mean()
    top1 = (ref.argmax(-1) == test.argmax(-1)).double().mean().item()
    c = compare_logits(ref, test, ids)
    assert c.kl == pytest.approx(kl, rel=1e-9) and c.kl > 0
    assert c.ppl_ref == pytest.approx(math.exp(nll), rel=1e-9)
    assert c.top1 == pytest.approx(top1) and 0 < c.top1 < 1
    assert set(c.to_json()) == {"kl", "top1_agreement", "perplexity_ref", "perplexity_test"}


def test_edge_values_and_stability():
    x = torch.randn(5, 7, generator=torch.Generator().manual_seed(1))
    assert mean_kl(x, x) == 0.0 and top1_agreement(x, x) == 1.0
    assert perplexity(torch.zeros(4, 32), torch.arange(4)) == pytest.approx(32.0)
    big = torch.tensor([[1e4, 0.0, -1e4], [0.0, 1e4, 0.0]])
    other = torch.tensor([[0.0, 1e4, -1e4], [0.0, 1e4, 0.0]])
    assert math.isfinite(mean_kl(big, other)) and mean_kl(big, other) == pytest.approx(5e3)
    masked = torch.tensor([[0.0, float("-inf"), 1.0]])
    assert mean_kl(masked, torch.zeros(1, 3)) >= 0.0
    assert math.isfinite(mean_kl(masked, torch.zeros(1, 3)))


def test_shape_errors():
    with pytest.raises(BadInputError) as e:
        mean_kl(torch.zeros(2, 3), torch.zeros(2, 4))
    assert e.value.code == "E_EVAL_SHAPE"
    with pytest.raises(BadInputError):
        perplexity(torch.zeros(3, 5), torch.zeros(4, dtype=torch.long))
    with pytest.raises(BadInputError):
        top1_agreement(torch.zeros(5), torch.zeros(5))


def test_ladder_metrics_are_the_same_math_and_survive_masked_logits():
    """slmpack.runtime.metrics (the ladder's numpy API) and calibration.evaluate (torch) agree, and a
    reference with -inf (masked) logits gives finite KL instead of NaN."""
    from slmpack.runtime import metrics

    g = torch.Generator().manual_seed(3)
    ref, test = torch.randn(9, 13, generator=g) * 2, torch.randn(9, 13, generator=g) * 2
    ids = torch.randint(0, 13, (9,), generator=g)
    c = metrics.compare_logits(ref.numpy(), test.numpy(), ids.numpy())
    assert c["mean_kl"] == pytest.approx(mean_kl(ref, test), rel=1e-12)
    assert c["top1_agreement"] == top1_agreement(ref, test)
    masked = ref.clone()
    masked[:, :4] = float("-inf")
    m = metrics.compare_logits(masked.numpy(), test.numpy(), np.full(9, 5))
    assert math.isfinite(m["mean_kl"]) and m["mean_kl"] > 0
    assert math.isfinite(m["perplexity_delta_pct"])


def test_windowed_accumulation_equals_one_pass():
    """The ladder accumulates per window (bounded memory); the result must equal the metrics of
    all positions at once."""
    from slmpack.runtime import metrics

    rng = np.random.default_rng(5)
    ref, test = rng.normal(size=(300, 40)) * 3, rng.normal(size=(300, 40)) * 3
    tgt = rng.integers(0, 40, 300)
    whole = metrics.compare_logits(ref, test, tgt)
    acc = metrics.LogitComparison()
    for s in range(0, 300, 128):
        acc.add(ref[s:s + 128], test[s:s + 128], tgt[s:s + 128])
    got = acc.result()
    assert acc.n == 300
    for k, v in whole.items():
        assert got[k] == pytest.approx(v, rel=1e-12, abs=1e-12), k
    assert 0 < got["top1_agreement"] < 1 and got["mean_kl"] > 0
