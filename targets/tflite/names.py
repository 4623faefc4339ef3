"""Signature, tensor and file names of the LiteRT target (litert-torch / LiteRT-LM conventions)."""
from __future__ import annotations

from slmpack.targets.tflite.module import cache_names

MODEL_FILE = "model.tflite"
DECODE = "decode"
TFLITE_DTYPES = {"float32": 0, "int32": 2}          # schema TensorType values
_DTYPE_NAMES = {v: k for k, v in TFLITE_DTYPES.items()}


def prefill(n: int) -> str:
    return f"prefill_{n}"


def input_names(num_layers: int) -> list[str]:
    return ["tokens", "input_pos", *cache_names(num_layers)]


def output_names(num_layers: int) -> list[str]:
    return ["logits", *cache_names(num_layers)]


def _cache_specs(spec, max_context: int) -> dict:
    shape = [1, spec.num_kv_heads, max_context, spec.head_dim]
    return {n: (shape, "float32") for n in cache_names(spec.num_layers)}


def input_specs(spec, seq: int, max_context: int) -> dict[str, tuple[list[int], str]]:
    return {"tokens": ([1, seq], "int32"), "input_pos": ([seq], "int32"), **_cache_specs(spec, max_context)}


def output_specs(spec, seq: int, max_context: int) -> dict[str, tuple[list[int], str]]:
    return {"logits": ([1, seq, spec.vocab_size], "float32"), **_cache_specs(spec, max_context)}


def describe(tensors: dict[str, dict]) -> list[dict]:
    """Manifest form of one signature side, in signature order (tokens, input_pos/logits, caches)."""
    def order(name: str):
        head = {"tokens": 0, "input_pos": 1, "logits": 0}
        if name in head:
            return (head[name], 0, name)
        return (2, int(name.rsplit("_", 1)[1]), name)

    return [{"name": n, "shape": tensors[n]["shape"], "dtype": _DTYPE_NAMES.get(tensors[n]["dtype"], "other")}
            for n in sorted(tensors, key=order)]
