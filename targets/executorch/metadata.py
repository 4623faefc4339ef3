"""Constant methods ExecuTorch's LLM runner reads from a .pte (``extension/llm/runner/constants.h``,
``llm_runner_helper.cpp: get_llm_metadata / get_eos_ids``). Each is a method returning a scalar
(``toScalar().to<int64_t>()``); ``get_eos_ids`` returns a list of ints.

* ``get_max_seq_len``     longest token chunk one ``forward`` call takes (the runner chunks prompts
                          by it); required by the runner.
* ``get_max_context_len`` KV-cache length in positions.
* ``enable_dynamic_shape`` true when ``forward`` takes 1..max_seq_len tokens (parallel prefill);
                          false makes the runner prefill one token at a time.
* ``use_kv_cache``        true: ``forward`` takes (tokens, input_pos), the cache lives in the program.
* ``get_bos_id``, ``get_vocab_size`` written for completeness; runner 1.x takes both from the tokenizer.
* ``use_sdpa_with_kv_cache`` true when attention runs as ``llama::custom_sdpa``.
"""
from __future__ import annotations

from slmpack.exporter.spec import ModelSpec


def constant_methods(spec: ModelSpec, gen: dict, max_prompt: int, max_context: int, custom_sdpa: bool) -> dict:
    eos = gen.get("eos_token_id", list(spec.eos_token_ids) or None)
    eos_ids = [] if eos is None else ([int(eos)] if isinstance(eos, int) else [int(e) for e in eos])
    bos = gen.get("bos_token_id", spec.bos_token_id)
    out = {
        "get_max_seq_len": int(max_prompt),
        "get_max_context_len": int(max_context),
        "enable_dynamic_shape": bool(max_prompt > 1),
        "use_kv_cache": True,
        "get_vocab_size": int(spec.vocab_size),
        "use_sdpa_with_kv_cache": bool(custom_sdpa),
    }
    if bos is not None:
        out["get_bos_id"] = int(bos)
    if eos_ids:
        out["get_eos_ids"] = eos_ids
    return dict(sorted(out.items()))
