"""Generate through ExecuTorch's own, unmodified LLM runner (``TextLLMRunner`` python bindings).

``TextLLMRunner(model.pte, tokenizer.json)`` loads the tokenizer with ExecuTorch's C++ tokenizers
(HF ``tokenizer.json`` is detected by ``load_tokenizer``), reads the metadata methods, prefills
the prompt through ``forward`` (chunked by ``get_max_seq_len``, parallel when
``enable_dynamic_shape``), then decodes one token per ``forward`` call, sampling the last
position of the ``[1, S, V]`` logits (``TextDecoderRunner::logits_to_token``); temperature 0 is
argmax. The token callback receives one decoded piece per generated token.

The runner aborts the process on some errors (``ET_CHECK``), so callers run it in a subprocess:
``python -m slmpack.targets.executorch.llm_runner MODEL.pte TOKENIZER.json PROMPT N`` prints one
JSON object ``{"pieces": [...], "stats": {...}}`` on the last stdout line.

Programs exported with ``sdpa=custom`` call ``llama::custom_sdpa.out`` / ``llama::update_cache.out``.
Those kernels live in ExecuTorch's LLM custom-ops library, not in the core runtime: a C++ app links
it (CMake ``EXECUTORCH_BUILD_KERNELS_LLM``); in Python, importing
``executorch.extension.llm.custom_ops.custom_ops`` loads it into the runtime that ``_llm_runner``
shares with the pybindings (both link ``pybindings/_C`` and ``libexecutorch``).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def generate(pte: str, tokenizer: str, prompt: str, max_new_tokens: int) -> dict:
    from executorch.extension.llm.runner import GenerationConfig, TextLLMRunner

    from slmpack.targets.executorch.source_transforms.custom_sdpa import load_custom_ops

    load_custom_ops()

    runner = TextLLMRunner(str(pte), str(tokenizer))
    pieces: list[str] = []
    stats: dict = {}
    cfg = GenerationConfig(echo=False, max_new_tokens=max_new_tokens, temperature=0.0, num_bos=0, num_eos=0)
    runner.generate(prompt, cfg, token_callback=pieces.append,
                    stats_callback=lambda s: stats.update(json.loads(s.to_json_string())))
    return {"pieces": pieces, "stats": stats}


def generate_subprocess(pte: Path, tokenizer: Path, prompt: str, max_new_tokens: int, timeout: float = 300) -> dict:
    proc = subprocess.run([sys.executable, "-m", __name__, str(pte), str(tokenizer), prompt, str(max_new_tokens)],
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"TextLLMRunner exited with {proc.returncode}: {proc.stderr.strip().splitlines()[-5:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def reference_pieces(tokenizer_json: Path, ids: list[int]) -> list[str]:
    """The piece TextLLMRunner prints for each id, from the Python tokenizers library."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    return [tok.decode([i], skip_special_tokens=False) for i in ids]


if __name__ == "__main__":
    out = generate(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
    sys.stdout.write("\n" + json.dumps(out) + "\n")
