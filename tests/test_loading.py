"""Checkpoint loading: sharded safetensors, spec parsing, pickle opt-in."""
from __future__ import annotations

import json

import pytest
import torch

from slmpack.errors import UnsupportedError
from slmpack.exporter.checkpoint import checkpoint_digest, load_state_dict, weight_files
from slmpack.exporter.spec import Family, RopeType, load_spec, spec_from_config
from tests.tiny_models import write_tiny_model


def test_sharded_safetensors_load_like_single(tmp_path):
    import transformers as tf

    single = write_tiny_model(tmp_path / "single", "qwen2")
    model = tf.AutoModelForCausalLM.from_pretrained(single)
    sharded = tmp_path / "sharded"
    model.save_pretrained(sharded, safe_serialization=True, max_shard_size="20KB")
    assert (sharded / "model.safetensors.index.json").is_file()
    assert len(weight_files(sharded)) > 1
    a, b = load_state_dict(single), load_state_dict(sharded)
    assert sorted(a) == sorted(b)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert checkpoint_digest(single) != checkpoint_digest(sharded)  # digests cover file layout too


def test_spec_reads_families_and_rope(tmp_path):
    p = write_tiny_model(tmp_path / "q", "qwen2", rope={"rope_type": "yarn", "factor": 4.0,
                                                       "original_max_position_embeddings": 32})
    spec = load_spec(p)
    assert spec.family is Family.QWEN2 and spec.attention_bias
    assert spec.rope.type is RopeType.YARN and spec.rope.factor == 4.0
    legacy = json.loads((p / "config.json").read_text())
    legacy.pop("rope_parameters", None)
    legacy.update(rope_theta=500000.0, rope_scaling={"type": "linear", "factor": 2.0})  # transformers 4.x style
    s2 = spec_from_config(legacy)
    assert s2.rope.type is RopeType.LINEAR and s2.rope.theta == 500000.0


def test_unsupported_rope_type_is_typed():
    cfg = {"architectures": ["LlamaForCausalLM"], "vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
           "num_hidden_layers": 1, "num_attention_heads": 2, "rope_scaling": {"rope_type": "longrope"}}
    with pytest.raises(UnsupportedError) as e:
        spec_from_config(cfg)
    assert e.value.code == "E_ROPE_UNSUPPORTED"


def test_pickle_opt_in_uses_weights_only(tmp_path):
    from safetensors.torch import load_file

    p = write_tiny_model(tmp_path / "m", "llama")
    sd = load_file(str(p / "model.safetensors"))
    (p / "model.safetensors").unlink()
    torch.save(sd, p / "pytorch_model.bin")
    got = load_state_dict(p, allow_pickle=True)
    assert all(torch.equal(got[k], sd[k]) for k in sd)
