"""Every non-Llama family: our reference module vs transformers' own modeling code (fp32, eager
attention), prefill and step-by-step decode past every sliding window and LongRoPE's switch."""
from __future__ import annotations

import pytest
import torch

from slmpack.exporter.checkpoint import load_state_dict
from slmpack.exporter.kv_cache import ConcatCache
from slmpack.exporter.reference import build_reference
from slmpack.exporter.spec import load_spec
from tests.tiny_families import FAMILIES, SEQ, write_family_model

TOL = 1e-4


def _empty_cache(spec):
    shape = (1, spec.num_kv_heads, 0, spec.head_dim)
    return ConcatCache([torch.zeros(shape) for _ in range(spec.num_layers)],
                       [torch.zeros(shape) for _ in range(spec.num_layers)])


@pytest.mark.parametrize("variant", [0, 1])
@pytest.mark.parametrize("family", FAMILIES)
def test_family_matches_transformers(tmp_path, family, variant):
    import transformers as tf

    path = write_family_model(tmp_path / "m", family, variant, seed=7 + variant)
    hf = tf.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()
    spec = load_spec(path)
    assert spec.delta_names(), "a family config must switch some delta on"
    assert spec.num_parameters == hf.num_parameters()   # every delta's weights counted (fit, inspect, manifest)
    ref = build_reference(spec, load_state_dict(path), max_context=64)
    ids = torch.randint(3, spec.vocab_size, (1, SEQ), generator=torch.Generator().manual_seed(variant))
    with torch.no_grad():
        want = hf(ids).logits
        got = ref.step(ids, torch.arange(SEQ), _empty_cache(spec))
        assert (got - want).abs().max().item() < TOL
        # step-by-step against transformers' own step-by-step (LongRoPE switches per call there too)
        past = tf.DynamicCache(config=hf.config)
        cache = _empty_cache(spec)
        worst = 0.0
        for t in range(SEQ):
            w = hf(ids[:, t:t + 1], past_key_values=past, use_cache=True).logits
            c = ConcatCache(cache.present_k, cache.present_v) if t else cache
            g = ref.step(ids[:, t:t + 1], torch.tensor([t]), c)
            cache = c
            worst = max(worst, (g - w).abs().max().item())
        assert worst < TOL
