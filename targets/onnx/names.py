"""I/O names and symbolic dims as ONNX Runtime GenAI expects them."""
from __future__ import annotations


def input_names(num_layers: int) -> list[str]:
    return ["input_ids", "attention_mask", "position_ids"] + [
        f"past_key_values.{i}.{kv}" for i in range(num_layers) for kv in ("key", "value")]


def output_names(num_layers: int) -> list[str]:
    return ["logits"] + [f"present.{i}.{kv}" for i in range(num_layers) for kv in ("key", "value")]


# symbolic dim names per (tensor kind, axis)
SEQ, PAST, TOTAL = "sequence_length", "past_sequence_length", "total_sequence_length"
