"""I/O and state names of slmpack Core ML packages (stable: runners and apps depend on them)."""
from __future__ import annotations

TOKENS, POSITIONS, LOGITS = "tokens", "input_pos", "logits"


def cache_names(num_layers: int) -> list[str]:
    """k_cache_0, v_cache_0, k_cache_1, ... (layer-major; the BufferProgram buffer names)."""
    return [f"{kv}_cache_{i}" for i in range(num_layers) for kv in ("k", "v")]


def cache_out_name(name: str) -> str:
    return f"{name}_out"

SEQ_DIM = "seq"
