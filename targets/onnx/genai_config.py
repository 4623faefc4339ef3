"""genai_config.json for onnxruntime-genai (see its config reference)."""
from __future__ import annotations

from slmpack.exporter.spec import Family, ModelSpec

# onnxruntime-genai 0.18's model type per family: each a decoder-only type it accepts (the strings
# its library knows), all fed the same GenAI I/O names (input_ids, attention_mask, position_ids,
# past_key_values.%d.key/value -> logits, present.%d.key/value). Every delta (norms, soft-caps,
# sliding windows, LongRoPE's switch, the MoE routing) is inside our graph, so the type selects no extra
# behaviour. 0.18 refuses "mixtral" ("Unsupported model_type in config.json: mixtral", measured): Mixtral
# is Mistral's decoder with a MoE MLP, so it is typed "mistral".
GENAI_TYPE = {Family.LLAMA: "llama", Family.MISTRAL: "mistral", Family.QWEN2: "qwen2", Family.QWEN3: "qwen3",
              Family.SMOLLM3: "smollm3", Family.OLMO2: "olmo", Family.GRANITE: "granite", Family.GEMMA: "gemma",
              Family.GEMMA2: "gemma2", Family.GEMMA3: "gemma3_text", Family.PHI: "phi", Family.PHI3: "phi3",
              Family.GPT2: "llama", Family.MIXTRAL: "mistral", Family.GRANITE_MOE: "granite",
              Family.QWEN2_MOE: "qwen2"}


def genai_config(spec: ModelSpec, filename: str, context_length: int, gen: dict, share_buffer: bool = False) -> dict:
    """``share_buffer``: every layer's attention is one GroupQueryAttention, which reads and writes
    a past/present buffer of ``max_length`` in place, so onnxruntime-genai allocates the KV cache once
    instead of concatenating a grown copy per token (``past_present_share_buffer``)."""
    e = gen.get("eos_token_id")   # the full stop list (generation_config eos + the template's end of turn)
    eos = ([int(e)] if isinstance(e, int) else [int(x) for x in e or ()]) or list(spec.eos_token_ids) or [0]
    return {
        "model": {
            "bos_token_id": spec.bos_token_id if spec.bos_token_id is not None else eos[0],
            "context_length": context_length,
            "decoder": {
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                "filename": filename,
                "head_size": spec.head_dim,
                "hidden_size": spec.hidden_size,
                "inputs": {
                    "input_ids": "input_ids", "attention_mask": "attention_mask",
                    "position_ids": "position_ids",
                    "past_key_names": "past_key_values.%d.key", "past_value_names": "past_key_values.%d.value",
                },
                "outputs": {
                    "logits": "logits",
                    "present_key_names": "present.%d.key", "present_value_names": "present.%d.value",
                },
                "num_attention_heads": spec.num_heads,
                "num_hidden_layers": spec.num_layers,
                "num_key_value_heads": spec.num_kv_heads,
            },
            "eos_token_id": eos if len(eos) > 1 else eos[0],
            "pad_token_id": gen.get("pad_token_id", eos[0]),
            "type": GENAI_TYPE[spec.family],
            "vocab_size": spec.vocab_size,
        },
        "search": {
            "diversity_penalty": 0.0, "do_sample": False, "early_stopping": True, "length_penalty": 1.0,
            "max_length": context_length, "min_length": 0, "no_repeat_ngram_size": 0, "num_beams": 1,
            "num_return_sequences": 1, "past_present_share_buffer": share_buffer, "repetition_penalty": 1.0,
            "temperature": 1.0, "top_k": 1, "top_p": 1.0,
        },
    }
