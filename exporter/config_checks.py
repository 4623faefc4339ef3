"""Value checks for config.json and generation_config.json, before any number is used.

Each rule names the offending field (``details["field"]``) and raises ``E_CONFIG_INVALID``:
integers are JSON integers (not booleans) in [1, 2**31); vocab_size ≥ 2; floats are finite;
rope_theta, rms_norm_eps and every RoPE scaling number are > 0; token ids are non-negative
integers (or lists of them); booleans are booleans.
"""
from __future__ import annotations

import math

from slmpack.errors import BadInputError

INT_MAX = 2**31 - 1
DIMS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "head_dim", "max_position_embeddings", "sliding_window")
POSITIVE_FLOATS = ("rms_norm_eps", "layer_norm_eps", "rope_theta")
ROPE_POSITIVE_FLOATS = ("rope_theta", "factor", "low_freq_factor", "high_freq_factor", "beta_fast", "beta_slow",
                        "attention_factor")
BOOLS = ("tie_word_embeddings", "attention_bias", "mlp_bias", "use_sliding_window")
TOKEN_IDS = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")
FLOAT_DTYPES = ("float32", "float16", "bfloat16", "float64", "auto")


def _bad(where: str, field: str, why: str) -> BadInputError:
    return BadInputError(f"{where}: {field} {why}", "E_CONFIG_INVALID", details={"field": field})


def _is_int(v) -> bool:
    return type(v) is int


def _is_number(v) -> bool:
    return type(v) in (int, float)


def _check_int(where, field, v, lo: int) -> None:
    if not _is_int(v) or not lo <= v <= INT_MAX:
        raise _bad(where, field, f"must be an integer in [{lo}, {INT_MAX}], got {v!r:.40}")


def _check_positive_float(where, field, v) -> None:
    if not _is_number(v) or not math.isfinite(v) or v <= 0:
        raise _bad(where, field, f"must be a finite number > 0, got {v!r:.40}")


def _check_token_ids(where, field, v) -> None:
    ids = v if isinstance(v, list) else [v]
    if not all(_is_int(i) and 0 <= i <= INT_MAX for i in ids):
        raise _bad(where, field, f"must be a non-negative integer or a list of them, got {v!r:.40}")


def check_config(cfg: dict, where: str = "config.json") -> None:
    """Raise E_CONFIG_INVALID on the first out-of-range or mistyped value of a config.json dict."""
    if "vocab_size" in cfg:
        _check_int(where, "vocab_size", cfg["vocab_size"], 2)
    for f in DIMS:
        if f == "sliding_window" and cfg.get(f) == 0 and cfg.get("use_sliding_window") is False:
            continue   # transformers' Qwen2-MoE config writes 0 for "no window" (use_sliding_window false)
        if cfg.get(f) is not None:
            _check_int(where, f, cfg[f], 1)
    for f in POSITIVE_FLOATS:
        if cfg.get(f) is not None:
            _check_positive_float(where, f, cfg[f])
    for f in BOOLS:
        if cfg.get(f) is not None and type(cfg[f]) is not bool:
            raise _bad(where, f, f"must be true or false, got {cfg[f]!r:.40}")
    for f in TOKEN_IDS:
        if cfg.get(f) is not None:
            _check_token_ids(where, f, cfg[f])
    for f in ("dtype", "torch_dtype"):
        if cfg.get(f) is not None and cfg[f] not in FLOAT_DTYPES:
            raise _bad(where, f, f"must be one of {', '.join(FLOAT_DTYPES)}, got {cfg[f]!r:.40}")
    for f in ("rope_parameters", "rope_scaling"):
        rope = cfg.get(f)
        if rope is None:
            continue
        if not isinstance(rope, dict):
            raise _bad(where, f, "must be an object or null")
        for k in ROPE_POSITIVE_FLOATS:
            if rope.get(k) is not None:
                _check_positive_float(where, f"{f}.{k}", rope[k])
        if rope.get("original_max_position_embeddings") is not None:
            _check_int(where, f"{f}.original_max_position_embeddings", rope["original_max_position_embeddings"], 1)
        lo, hi = rope.get("low_freq_factor"), rope.get("high_freq_factor")
        if lo is not None and hi is not None and lo == hi:
            raise _bad(where, f"{f}.high_freq_factor", "must differ from low_freq_factor")
        for k in ("rope_type", "type"):
            if rope.get(k) is not None and not isinstance(rope[k], str):
                raise _bad(where, f"{f}.{k}", "must be a string")
        kind = rope.get("rope_type", rope.get("type"))
        if (kind in ("llama3", "yarn") and rope.get("original_max_position_embeddings") is None
                and cfg.get("max_position_embeddings") is None):
            raise _bad(where, f"{f}.original_max_position_embeddings", f"is needed by rope type {kind}")
    heads, hidden = cfg.get("num_attention_heads"), cfg.get("hidden_size")
    if cfg.get("head_dim") is None and _is_int(heads) and _is_int(hidden) and hidden % heads:
        raise _bad(where, "hidden_size", f"({hidden}) is not a multiple of num_attention_heads ({heads})")
    for f in ("architectures",):
        v = cfg.get(f)
        if v is not None and not (isinstance(v, list) and all(isinstance(a, str) for a in v)):
            raise _bad(where, f, "must be a list of strings")
    for f in ("model_type", "hidden_act"):
        if cfg.get(f) is not None and not isinstance(cfg[f], str):
            raise _bad(where, f, "must be a string")


def check_generation_config(gen, where: str = "generation_config.json") -> None:
    """Types of the generation_config.json fields an exporter or an app reads."""
    if not isinstance(gen, dict):
        raise BadInputError(f"{where}: expected a JSON object", "E_CONFIG_INVALID")
    for f in TOKEN_IDS:
        if gen.get(f) is not None:
            _check_token_ids(where, f, gen[f])
    for f in ("max_length", "max_new_tokens", "min_length", "top_k", "num_beams"):
        if gen.get(f) is not None:
            _check_int(where, f, gen[f], 0)
    for f in ("temperature", "top_p", "repetition_penalty"):
        v = gen.get(f)
        if v is not None and (not _is_number(v) or not math.isfinite(v) or v < 0):
            raise _bad(where, f, f"must be a finite number ≥ 0, got {v!r:.40}")
    if gen.get("do_sample") is not None and type(gen["do_sample"]) is not bool:
        raise _bad(where, "do_sample", "must be true or false")
