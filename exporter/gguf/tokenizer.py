"""GGUF tokenizer metadata (``tokenizer.ggml.*``) -> ``tokenizer.json``, ``tokenizer_config.json``,
``generation_config.json`` and ``chat_template.jinja``, built with the ``tokenizers`` library.

Byte-level BPE (``tokenizer.ggml.model = gpt2``): the vocabulary in file order, the merges as
stored, UNKNOWN and CONTROL tokens as special added tokens and USER_DEFINED ones as plain added
tokens (all matched whole, as llama.cpp does), and the pre-tokenizer that ``tokenizer.ggml.pre``
names (the split llama.cpp applies for that name: ``PRE_TOKENIZERS``). A name not in that table is refused:
splitting text another way than the merges were learned on gives other token ids. Llama-3-style
vocabularies match whole words before merging (``ignore_merges``), as in their tokenizer.json.
SentencePiece BPE (``llama``: Llama-2, TinyLlama): the pieces with byte fallback and ``▁`` for
spaces (``add_space_prefix``), merges derived from the scores as transformers derives them from a
``tokenizer.model``; BOS added unless the file says otherwise. Other models are refused.
Stop tokens: ``eos_token_id`` and, when different, ``eot_token_id`` (llama.cpp's end of turn).
"""
from __future__ import annotations

from dataclasses import dataclass

from slmpack.errors import UnsupportedError
from slmpack.exporter.gguf.header import invalid
from slmpack.exporter.gguf.reader import GgufFile

UNKNOWN, CONTROL, USER_DEFINED = 2, 3, 4
_LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
           r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
          r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
PRE_TOKENIZERS = {"gpt2": "gpt2", "smollm": "digits+gpt2", "llama-bpe": "llama3", "llama3": "llama3",
                  "llama-v3": "llama3", "qwen2": "qwen2", "deepseek-r1-qwen": "qwen2"}


@dataclass(frozen=True)
class TokenizerFiles:
    """What the model directory gets (``tokenizer_json`` None: the file has no tokenizer)."""

    tokenizer_json: str | None
    tokenizer_config: dict
    generation_config: dict
    chat_template: str | None


def _pre_tokenizer(kind: str):
    from tokenizers import Regex, pre_tokenizers as pt

    if kind == "gpt2":
        return pt.ByteLevel(add_prefix_space=False, use_regex=True)
    if kind == "digits+gpt2":
        return pt.Sequence([pt.Digits(individual_digits=True), pt.ByteLevel(add_prefix_space=False, use_regex=True)])
    split = _LLAMA3 if kind == "llama3" else _QWEN2
    return pt.Sequence([pt.Split(Regex(split), behavior="isolated"),
                        pt.ByteLevel(add_prefix_space=False, use_regex=False)])


def _strings(g: GgufFile, key: str) -> tuple[str, ...]:
    v = g.value(key, tuple)
    if not all(isinstance(s, str) for s in v):
        raise invalid(g.where, f"{key} is not an array of strings")
    return v


def _merges(g: GgufFile) -> list[tuple[str, str]]:
    merges = []
    for m in _strings(g, "tokenizer.ggml.merges"):
        parts = m.split(" ")
        if len(parts) != 2:
            raise invalid(g.where, f"merge {m[:40]!r} is not two tokens")
        merges.append((parts[0], parts[1]))
    return merges


def _bpe(g: GgufFile, vocab: dict, merges: list, **kw):
    from tokenizers import Tokenizer, models

    try:
        return Tokenizer(models.BPE(vocab, merges, **kw))
    except Exception as e:  # tokenizers raises plain Exceptions (a merge naming an unknown token)
        raise invalid(g.where, f"the BPE vocabulary and merges do not agree ({str(e)[:200]})") from None


def _byte_level(g: GgufFile, tokens: tuple[str, ...]):
    from tokenizers import decoders, normalizers

    pre = g.value("tokenizer.ggml.pre", str, "default")
    if pre not in PRE_TOKENIZERS:
        raise UnsupportedError(f"{g.where}: BPE pre-tokenizer {pre!r} is not known (known: "
                               f"{', '.join(sorted(PRE_TOKENIZERS))}); its token ids could not be reproduced",
                               "E_GGUF_UNSUPPORTED", details={"pre": pre})
    kind = PRE_TOKENIZERS[pre]
    tok = _bpe(g, {t: i for i, t in enumerate(tokens)}, _merges(g), ignore_merges=kind == "llama3")
    if kind == "qwen2":
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = _pre_tokenizer(kind)
    tok.decoder = decoders.ByteLevel()
    return tok


def spm_merges(tokens: tuple[str, ...], scores: tuple[float, ...]) -> list[tuple[str, str]]:
    """The merges a SentencePiece BPE vocabulary implies, as transformers derives them for its
    tokenizer.json (``generate_merges``): every split of a piece into two pieces, best-scored first."""
    vocab = {t: i for i, t in enumerate(tokens)}
    merges = []
    for piece, score in zip(tokens, scores):
        local = sorted(((piece[:k], piece[k:]) for k in range(1, len(piece))
                        if piece[:k] in vocab and piece[k:] in vocab), key=lambda m: (vocab[m[0]], vocab[m[1]]))
        merges += [(left, right, score) for left, right in local]
    merges.sort(key=lambda m: (m[2], len(m[0]), len(m[1])), reverse=True)
    return [(left, right) for left, right, _ in merges]


def _sentencepiece(g: GgufFile, tokens: tuple[str, ...], unk: int | None):
    """Llama-2 style: BPE over ▁-marked text with <0xXX> byte fallback, merges from the scores."""
    from tokenizers import decoders, normalizers

    scores = g.value("tokenizer.ggml.scores", tuple)
    if len(scores) != len(tokens) or not all(isinstance(x, float) for x in scores):
        raise invalid(g.where, "tokenizer.ggml.scores is not one float per token")
    if g.value("tokenizer.ggml.merges", tuple, ()):
        merges = _merges(g)
    else:
        merges = spm_merges(tokens, scores)
    tok = _bpe(g, {t: i for i, t in enumerate(tokens)}, merges, byte_fallback=True, fuse_unk=True,
               unk_token=None if unk is None else tokens[unk])
    prefix = g.value("tokenizer.ggml.add_space_prefix", bool, True)
    # sentencepiece and llama.cpp add the dummy prefix even before a leading space (Metaspace's
    # prepend_scheme="first" would not): Prepend + Replace, as Llama-2's own tokenizer.json has it
    tok.normalizer = normalizers.Sequence([*([normalizers.Prepend("\u2581")] if prefix else []),
                                          normalizers.Replace(" ", "\u2581")])
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     *([decoders.Strip(" ", 1, 0)] if prefix else [])])
    return tok


def _tokenizer_json(g: GgufFile, model: str, tokens: tuple[str, ...], ids: dict, add_bos: bool) -> str:
    from tokenizers import AddedToken, processors

    tok = _byte_level(g, tokens) if model == "gpt2" else _sentencepiece(g, tokens, ids["unknown"])
    types = g.value("tokenizer.ggml.token_type", tuple, ()) or (1,) * len(tokens)
    if len(types) != len(tokens):
        raise invalid(g.where, "tokenizer.ggml.token_type and tokenizer.ggml.tokens differ in length")
    added = [AddedToken(t, special=ty != USER_DEFINED, normalized=False) for t, ty in zip(tokens, types)
             if ty in (UNKNOWN, CONTROL, USER_DEFINED)]   # llama.cpp's special tokens: matched whole
    tok.add_special_tokens([a for a in added if a.special])
    tok.add_tokens([a for a in added if not a.special])
    bos = ids["bos"]
    if add_bos and bos is not None:
        tok.post_processor = processors.TemplateProcessing(single=f"{tokens[bos]} $A", pair=f"{tokens[bos]} $A $B:1",
                                                           special_tokens=[(tokens[bos], bos)])
    return tok.to_str()


def _token_id(g: GgufFile, key: str, n: int) -> int | None:
    if key not in g.metadata:
        return None
    i = g.value(key, int)
    if not 0 <= i < n:
        raise invalid(g.where, f"{key} {i} is not a token id (vocabulary of {n})")
    return i


def tokenizer_files(g: GgufFile) -> TokenizerFiles:
    template = g.value("tokenizer.chat_template", str, "") or None
    model = g.value("tokenizer.ggml.model", str, "none")
    if model == "none":
        return TokenizerFiles(None, {}, {}, template)
    if model not in ("gpt2", "llama"):
        raise UnsupportedError(f"{g.where}: tokenizer model {model!r} is not converted (byte-level BPE 'gpt2' and "
                               "SentencePiece BPE 'llama' are)", "E_GGUF_UNSUPPORTED", details={"tokenizer_model": model})
    tokens = _strings(g, "tokenizer.ggml.tokens")
    if len(set(tokens)) != len(tokens):
        raise invalid(g.where, "tokenizer.ggml.tokens has duplicate tokens")
    ids = {k: _token_id(g, f"tokenizer.ggml.{k}_token_id", len(tokens)) for k in ("bos", "eos", "eot", "padding", "unknown")}
    add_bos = g.value("tokenizer.ggml.add_bos_token", bool, model == "llama")   # llama.cpp's default
    add_eos = g.value("tokenizer.ggml.add_eos_token", bool, False)
    if add_eos:
        raise UnsupportedError(f"{g.where}: tokenizer.ggml.add_eos_token is not converted", "E_GGUF_UNSUPPORTED")
    cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "add_bos_token": add_bos, "add_eos_token": False,
           "clean_up_tokenization_spaces": False,
           **{f"{k}_token": tokens[ids[key]] for k, key in (("bos", "bos"), ("eos", "eos"), ("pad", "padding"),
                                                             ("unk", "unknown")) if ids[key] is not None}}
    stops = [i for i in (ids["eos"], ids["eot"]) if i is not None]
    gen = {"bos_token_id": ids["bos"], "eos_token_id": (stops[0] if len(set(stops)) == 1 else sorted(set(stops)))
           if stops else None, "do_sample": False}
    if ids["padding"] is not None:
        gen["pad_token_id"] = ids["padding"]
    return TokenizerFiles(_tokenizer_json(g, model, tokens, ids, add_bos), cfg, gen, template)
