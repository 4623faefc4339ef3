"""Our reference module vs transformers' own modeling code on the same checkpoint (fp32)."""
from __future__ import annotations

import pytest
import torch

from slmpack.exporter.checkpoint import load_state_dict
from slmpack.exporter.kv_cache import ConcatCache
from slmpack.exporter.reference import build_reference
from slmpack.exporter.spec import load_spec
from tests.tiny_models import write_tiny_model

CASES = [
    # family, gqa, tied, rope
    ("llama", True, True, None),
    ("llama", False, False, {"rope_type": "linear", "factor": 2.0}),
    ("llama", True, False, {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                            "high_freq_factor": 4.0, "original_max_position_embeddings": 32}),
    ("mistral", True, False, None),
    ("mistral", False, True, {"rope_type": "linear", "factor": 4.0}),
    ("mistral", True, True, {"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 64}),
    ("qwen2", True, True, None),
    ("qwen2", False, False, {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32}),
    ("qwen2", True, False, {"rope_type": "linear", "factor": 2.0}),
]


def _empty_cache(spec, n=0):
    shape = (1, spec.num_kv_heads, n, spec.head_dim)
    return ConcatCache([torch.zeros(shape) for _ in range(spec.num_layers)],
                       [torch.zeros(shape) for _ in range(spec.num_layers)])


@pytest.mark.parametrize("family,gqa,tied,rope", CASES)
def test_logits_match_transformers(tmp_path, family, gqa, tied, rope):
    import transformers as tf

    path = write_tiny_model(tmp_path / "m", family, seed=hash((family, gqa, tied)) % 1000,
                            gqa=gqa, tied=tied, rope=rope)
    hf = tf.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    spec = load_spec(path)
    assert spec.num_kv_heads == (spec.num_heads // 2 if gqa else spec.num_heads)
    assert spec.tie_word_embeddings == tied
    ref = build_reference(spec, load_state_dict(path), max_context=64)

    ids = torch.randint(3, spec.vocab_size, (1, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = hf(ids).logits
        got = ref.step(ids, torch.arange(40), _empty_cache(spec))
        assert (got - want).abs().max().item() < 1e-4

        # step-by-step decode: prefill 24, then 16 single tokens against the growing cache
        cache = _empty_cache(spec)
        out = [ref.step(ids[:, :24], torch.arange(24), cache)]
        k, v = cache.present_k, cache.present_v
        for t in range(24, 40):
            c = ConcatCache(k, v)
            out.append(ref.step(ids[:, t:t + 1], torch.tensor([t]), c))
            k, v = c.present_k, c.present_v
        got_steps = torch.cat(out, dim=1)
        assert (got_steps - want).abs().max().item() < 1e-4
