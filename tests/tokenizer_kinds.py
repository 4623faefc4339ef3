"""Three tokenizer kinds for parity tests, built with the `tokenizers` library from bundled text
(deterministic, no downloads): byte-level BPE (the demo model's), SentencePiece-style Unigram with
byte fallback (Llama-2 / Gemma convention: ▁ for spaces, <0xXX> byte pieces), and BERT WordPiece."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

KINDS = ("byte_level_bpe", "sentencepiece_bpe_byte_fallback", "unigram_byte_fallback", "wordpiece")


def _texts() -> list[str]:
    from slmpack.bundled import demo_data_dir

    return (demo_data_dir() / "calibration.txt").read_text(encoding="utf-8").splitlines()


def unigram_byte_fallback():
    from tokenizers import Tokenizer, decoders, models, normalizers, trainers

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    trainer = trainers.UnigramTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"], unk_token="<unk>",
                                      shrinking_factor=0.75, max_piece_length=8)
    tok.train_from_iterator(_texts(), trainer)
    vocab = json.loads(tok.to_str())["model"]["vocab"]
    vocab = [(p, float(sc)) for p, sc in vocab]
    bytes_ = [(f"<0x{b:02X}>", -20.0) for b in range(256)]
    model = models.Unigram(vocab[:3] + bytes_ + vocab[3:], unk_id=0, byte_fallback=True)
    out = Tokenizer(model)
    out.normalizer = tok.normalizer
    out.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    out.add_special_tokens(["<unk>", "<s>", "</s>"])
    return out


def sentencepiece_bpe_byte_fallback():
    """Llama-2 / Gemma tokenizer.json convention: BPE over ▁-marked text, <0xXX> byte fallback."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="never")   # train like SentencePiece: ▁ only
    tok.train_from_iterator(_texts(), trainers.BpeTrainer(vocab_size=700, special_tokens=["<unk>", "<s>", "</s>"]))
    # starts a piece; the shipped tokenizer (like Llama-2's) has no pre-tokenizer
    model = json.loads(tok.to_str())["model"]   # Llama-2 layout: <0xXX> pieces are plain vocabulary at ids 3..258
    pieces = sorted(model["vocab"], key=model["vocab"].get)
    vocab = {p: i for i, p in enumerate(pieces[:3] + [f"<0x{b:02X}>" for b in range(256)] + pieces[3:])}
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    out = Tokenizer(models.BPE(vocab, merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    out.normalizer, out.decoder = tok.normalizer, tok.decoder
    out.add_special_tokens(["<unk>", "<s>", "</s>"])
    return out


def wordpiece():
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(_texts(), trainers.WordPieceTrainer(
        vocab_size=600, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    return tok


def write_tokenizer(kind: str, into: Path) -> Path:
    """Write ``kind``'s tokenizer.json (and a matching tokenizer_config.json) into ``into``."""
    from slmpack.bundled import demo_model_dir

    if kind == "byte_level_bpe":
        shutil.copyfile(demo_model_dir() / "tokenizer.json", into / "tokenizer.json")
        shutil.copyfile(demo_model_dir() / "tokenizer_config.json", into / "tokenizer_config.json")
        return into
    tok = {"sentencepiece_bpe_byte_fallback": sentencepiece_bpe_byte_fallback,
           "unigram_byte_fallback": unigram_byte_fallback, "wordpiece": wordpiece}[kind]()
    tok.save(str(into / "tokenizer.json"))
    llama = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "tokenizer_class": "LlamaTokenizerFast"}
    special = {"sentencepiece_bpe_byte_fallback": llama, "unigram_byte_fallback": {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
                                         "tokenizer_class": "LlamaTokenizerFast"},
               "wordpiece": {"unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]",
                             "tokenizer_class": "BertTokenizerFast"}}[kind]
    (into / "tokenizer_config.json").write_text(json.dumps({**special, "add_bos_token": False}), encoding="utf-8")
    return into
