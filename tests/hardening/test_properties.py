"""Property tests (hypothesis) over hostile configs, generation configs, shard indexes, safetensors
headers and manifests: each either parses or raises a typed SlmpackError (exit 2), exactly per the
rule, and in bounded time (per-example deadline)."""
from __future__ import annotations

import json
import math
import os
import struct
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings, strategies as st

from slmpack.errors import BadInputError, SlmpackError
from slmpack import confine
from slmpack.exporter.checkpoint import weight_files
from slmpack.exporter.config_checks import check_config, check_generation_config
from slmpack.exporter.inputs import eos_ids
from slmpack.exporter.safetensors_reader import read_header
from slmpack.exporter.spec import spec_from_config
from slmpack.package import read_manifest, verify

SETTINGS = settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
BASE = {"architectures": ["LlamaForCausalLM"], "vocab_size": 96, "hidden_size": 32, "intermediate_size": 72,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": True}
numbers = st.one_of(st.integers(-3, 300), st.sampled_from([0, 1, 2, 2**31 - 1, 2**31, 2**40, -2**40]),
                    st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none(), st.text(max_size=4))
json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8)),
                           lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4),
                           max_leaves=20)
FIELDS = list(BASE) + ["head_dim", "rope_parameters", "rope_scaling", "eos_token_id", "bos_token_id",
                       "sliding_window", "dtype"]


def _violates(cfg: dict) -> bool:
    def bad_num(v, lo, integer):
        if integer:
            return type(v) is not int or not lo <= v < 2**31
        return type(v) not in (int, float) or not math.isfinite(v) or v <= 0
    return (bad_num(cfg.get("vocab_size"), 2, True)
            or any(bad_num(cfg[k], 1, True) for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                                     "num_attention_heads", "max_position_embeddings") if k in cfg)
            or any(bad_num(cfg[k], 0, False) for k in ("rms_norm_eps", "rope_theta") if cfg.get(k) is not None))


@SETTINGS
@given(st.dictionaries(st.sampled_from(FIELDS), st.one_of(numbers, json_values), max_size=5))
def test_hostile_config_is_accepted_or_a_typed_error(changes):
    cfg = {**BASE, **changes}
    try:
        check_config(cfg)
        spec = spec_from_config(cfg)
    except SlmpackError as e:
        assert e.exit_code == 2 and e.code.startswith("E_")
        return
    assert not _violates(cfg), cfg  # exactly the rule: every out-of-range value is refused
    assert spec.rms_norm_eps > 0 and spec.rope.theta > 0 and spec.vocab_size >= 2
    if spec.head_dim <= 4096:
        inv, scale = spec.rope.inv_freq_and_scale(spec.head_dim, spec.max_position_embeddings)
        assert all(math.isfinite(f) for f in inv) and math.isfinite(scale)


@SETTINGS
@given(st.dictionaries(st.sampled_from(["eos_token_id", "bos_token_id", "pad_token_id", "max_length", "temperature",
                                        "top_p", "top_k", "do_sample", "other"]),
                       st.one_of(numbers, json_values), max_size=5))
def test_hostile_generation_config(gen):
    try:
        check_generation_config(gen)
    except BadInputError as e:
        assert e.code == "E_CONFIG_INVALID"
        return
    ids = eos_ids(gen)  # what the pipeline does with an accepted config never fails
    assert all(type(i) is int and i >= 0 for i in ids)


shard_names = st.one_of(st.text(max_size=40), st.sampled_from(["../x.safetensors", "/etc/passwd", "a/b", "..", ".",
                                                               "model.safetensors", "w.bin", "x\\y", "a\0b"]),
                        json_values)


@SETTINGS
@given(st.dictionaries(st.text(max_size=10), shard_names, max_size=4))
def test_hostile_index_names_stay_inside(weight_map):
    with tempfile.TemporaryDirectory() as d:
        root = Path(d) / "m"
        root.mkdir()
        (root / "model.safetensors").write_bytes(b"\0" * 8)
        (root / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
        try:
            paths = weight_files(root)
        except BadInputError as e:
            assert e.code in ("E_PATH_UNSAFE", "E_WEIGHTS_CORRUPT", "E_WEIGHTS_MISSING", "E_PICKLE_REFUSED",
                              "E_NOT_REGULAR_FILE")
            return
        assert paths and all(p.parent == root and p.suffix == ".safetensors" for p in paths)


@SETTINGS
@given(st.one_of(json_values.map(lambda v: json.dumps(v).encode()), st.binary(max_size=64)),
       st.integers(0, 2**64 - 1) | st.none(), st.binary(max_size=64))
def test_hostile_safetensors_header(header, claimed, data):
    with tempfile.TemporaryFile() as f:
        n = len(header) if claimed is None else claimed
        f.write(struct.pack("<Q", n) + header + data)
        f.seek(0)
        try:
            start, infos = read_header(f, "w.safetensors")
        except BadInputError as e:
            assert e.code == "E_WEIGHTS_CORRUPT"
            return
        size = os.fstat(f.fileno()).st_size
        assert start == 8 + n and sum(t.end - t.begin for t in infos) == size - start


@SETTINGS
@given(st.one_of(json_values, st.fixed_dictionaries({"schema_version": st.just(1)},
                                                    optional={"files": json_values, "target": json_values})))
def test_hostile_manifest(manifest):
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "manifest.json").write_text(json.dumps(manifest))
        try:
            read_manifest(Path(d))
            verify(Path(d))
        except SlmpackError as e:
            assert e.exit_code in (1, 2)


def test_deep_json_is_typed_not_recursion():
    for text in ("[" * 200_000 + "]" * 200_000, '{"a":' * 100_000 + "1" + "}" * 100_000):
        try:
            confine.parse_json(text.encode(), "x.json")
        except BadInputError as e:
            assert e.code == "E_CONFIG_INVALID"
        else:
            raise AssertionError("deep JSON accepted")
