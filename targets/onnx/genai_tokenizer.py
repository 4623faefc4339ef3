"""The ONNX package's tokenizer.json in the form onnxruntime-genai's tokenizer runs as written.

onnxruntime-genai tokenizes with onnxruntime-extensions, which skips a ``Digits`` pre-tokenizer
(``bpe_tokenizer_model.hpp`` runs only the ``Split`` steps of a ``Sequence``, then ByteLevel's GPT-2
regex). SmolLM / SmolLM2 tokenizers, and GGUFs with llama.cpp's ``smollm`` pre-tokenizer, are
``Sequence[Digits(individual_digits), ByteLevel(use_regex)]``: digits isolated first, then GPT-2's
split inside each piece. genai splits ``"x123"`` into ``x 123`` and ``"will  1"`` into
``will Ġ Ġ1`` instead of ``x 1 2 3`` and ``will ĠĠ 1``: 413 of the 2,408 parity-corpus lines differed
on the demo vocabulary.

The same split written as two ``Split`` steps, ``\\p{N}`` (isolated) then the GPT-2 regex (isolated),
followed by a regex-free ByteLevel, is what genai runs step by step. Hugging Face tokenizers give
it the same ids by construction (``Digits`` isolates exactly the ``\\p{N}`` characters); the rewrite
checks that on the parity corpus and keeps the original file if a single line differs. ExecuTorch's
C++ tokenizer has the opposite gap (it returns nothing for the two-``Split`` form), so only the
ONNX package carries the rewritten file; each runtime's tokenizer certificate checks its own.
"""
from __future__ import annotations

import json
from pathlib import Path

GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"


def _is_digits_then_bytelevel(pre: dict | None) -> bool:
    if not pre or pre.get("type") != "Sequence" or len(pre.get("pretokenizers") or []) != 2:
        return False
    digits, byte_level = pre["pretokenizers"]
    return (digits.get("type") == "Digits" and digits.get("individual_digits") is True
            and byte_level.get("type") == "ByteLevel" and byte_level.get("use_regex", True) is True)


def genai_form(tok: dict) -> dict | None:
    """The two-``Split`` form of a Digits + ByteLevel tokenizer, or None when nothing needs rewriting."""
    pre = tok.get("pre_tokenizer")
    if not _is_digits_then_bytelevel(pre):
        return None
    byte_level = dict(pre["pretokenizers"][1], use_regex=False)
    split = [{"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False}
             for regex in (r"\p{N}", GPT2_REGEX)]
    return {**tok, "pre_tokenizer": {"type": "Sequence", "pretokenizers": [*split, byte_level]}}


def rewrite_for_genai(stage: Path) -> bool:
    """Rewrite ``stage/tokenizer.json`` in genai's form when it needs it and Hugging Face tokenizers
    give identical ids for both forms on the parity corpus. True when rewritten."""
    from tokenizers import Tokenizer

    from slmpack.tokenizer_parity import corpus_lines

    path = stage / "tokenizer.json"
    if not path.is_file():
        return False
    text = path.read_text(encoding="utf-8")
    new = genai_form(json.loads(text))
    if new is None:
        return False
    new_text = json.dumps(new, ensure_ascii=False, indent=2)
    before, after = Tokenizer.from_str(text), Tokenizer.from_str(new_text)
    for line in corpus_lines():
        if before.encode(line, add_special_tokens=False).ids != after.encode(line, add_special_tokens=False).ids:
            return False
    path.write_text(new_text + "\n", encoding="utf-8")
    return True
