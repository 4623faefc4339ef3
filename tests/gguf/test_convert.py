"""GGUF -> Hugging Face layout: tensors, config, tokenizer, chat template and stop tokens, checked
against the original checkpoint and against transformers' own GGUF loader (test-only oracle)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from slmpack.exporter.gguf.source import materialised
from slmpack.exporter.spec import load_spec
from tests.gguf.writer import write_gguf


def _oracle_tensors(gguf_path: Path, model_dir: Path) -> dict[str, np.ndarray]:
    """transformers' GGUF loader (dequantize + its own reverse q/k permutation)."""
    import transformers as tf
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    model = tf.AutoModelForCausalLM.from_config(tf.AutoConfig.from_pretrained(model_dir))
    parsed = load_gguf_checkpoint(str(gguf_path), return_tensors=True, model_to_load=model)
    return {k: v.numpy() for k, v in parsed["tensors"].items()}


def test_f32_gguf_is_the_checkpoint_exactly(instruct, gguf_of):
    """F32: every tensor bit-identical to the original (so llama's q/k un-permutation is right), the
    ModelSpec equal, the chat template carried, both stop tokens kept."""
    with materialised(gguf_of("F32")) as src:
        got, want = load_file(str(src.model_dir / "model.safetensors")), load_file(str(instruct / "model.safetensors"))
        assert sorted(got) == sorted(want)
        assert all(np.array_equal(got[k], want[k]) for k in want)
        spec, orig = load_spec(src.model_dir), load_spec(instruct)
        assert spec.to_json() == orig.to_json()
        assert (src.model_dir / "chat_template.jinja").read_text() == (instruct / "chat_template.jinja").read_text()
        gen, orig_gen = (json.loads((d / "generation_config.json").read_text()) for d in (src.model_dir, instruct))
        assert sorted(gen["eos_token_id"]) == sorted(orig_gen["eos_token_id"]) and len(gen["eos_token_id"]) == 2
        assert src.summary.tensor_types == (("F32", 21),) and src.plan_dir is None


@pytest.mark.parametrize("qtype", ["F16", "BF16", "Q8_0", "Q4_0", "Q4_1"])
def test_quantized_gguf_equals_transformers_dequantization(instruct, gguf_of, qtype):
    """Block and half types: our HF tensors equal transformers' loader of the same file bit for
    bit (both dequantize with the gguf package; the names and q/k order are each side's own), and
    stay within the type's rounding of the original."""
    path = gguf_of(qtype)
    oracle = _oracle_tensors(path, instruct)
    with materialised(path) as src:
        got = load_file(str(src.model_dir / "model.safetensors"))
    want = load_file(str(instruct / "model.safetensors"))
    assert sorted(got) == sorted(oracle)
    assert all(np.array_equal(got[k], oracle[k]) for k in got), [k for k in got if not np.array_equal(got[k], oracle[k])]
    rel = {"F16": 2 ** -11, "BF16": 2 ** -8, "Q8_0": 1 / 127, "Q4_0": 1 / 7, "Q4_1": 2 / 15}[qtype]
    for k, w in want.items():   # |error| <= one code step of the block's range (per-tensor max as a bound)
        assert np.abs(got[k] - w).max() <= rel * np.abs(w).max() + 1e-7, k


def test_tokenizer_reproduces_the_original_ids(instruct, gguf_of):
    """The tokenizer.json rebuilt from tokenizer.ggml.* gives the original token ids and text on the
    whole parity corpus (English, code, CJK, emoji, RTL, combining marks, special-token strings);
    transformers' GGUF tokenizer agrees."""
    import transformers as tf
    from tokenizers import Tokenizer

    from slmpack.bundled import demo_data_dir

    path = gguf_of("F32")
    lines = (demo_data_dir() / "tokenizer_corpus.txt").read_text(encoding="utf-8").splitlines()
    orig = Tokenizer.from_file(str(instruct / "tokenizer.json"))
    with materialised(path) as src:
        ours = Tokenizer.from_file(str(src.model_dir / "tokenizer.json"))
    theirs = tf.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    assert len(lines) >= 2000
    for line in lines:
        ids = orig.encode(line).ids
        assert ours.encode(line).ids == ids, line
        assert ours.decode(ids, skip_special_tokens=False) == orig.decode(ids, skip_special_tokens=False), line
        assert theirs(line, add_special_tokens=False)["input_ids"] == ids, line


@pytest.mark.parametrize("arch", ["qwen2", "qwen3"])
def test_qwen_layouts(tmp_path, arch):
    """qwen2 (q/k/v biases) and qwen3 (q/k norms, head_dim != hidden/heads): not permuted, exact."""
    import torch
    import transformers as tf

    cls, cfg = {"qwen2": (tf.Qwen2ForCausalLM, tf.Qwen2Config), "qwen3": (tf.Qwen3ForCausalLM, tf.Qwen3Config)}[arch]
    kw = dict(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-5, tie_word_embeddings=arch == "qwen3")
    torch.manual_seed(0)
    model = cls(cfg(**kw, **({"head_dim": 16} if arch == "qwen3" else {}))).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p))
    model.save_pretrained(tmp_path / arch, safe_serialization=True)
    path = write_gguf(tmp_path / arch, tmp_path / f"{arch}.gguf")
    with materialised(path) as src:
        got = load_file(str(src.model_dir / "model.safetensors"))
        spec = load_spec(src.model_dir)
    want = load_file(str(tmp_path / arch / "model.safetensors"))
    assert sorted(got) == sorted(want) and all(np.array_equal(got[k], want[k]) for k in want)
    orig = load_spec(tmp_path / arch).to_json()
    ours = spec.to_json()
    for key in ("bos_token_id", "eos_token_ids"):   # no tokenizer in this file: no special ids
        ours.pop(key), orig.pop(key)
    assert ours == orig


@pytest.mark.parametrize("qtype", ["Q4_K", "Q6_K"])
def test_k_quants_dequantize_through_every_layer(tmp_path, qtype):
    """Q4_K / Q6_K: the gguf package cannot write them, so the blocks are random bytes (finite fp16
    scales). Our HF tensors equal transformers' loader of the same file bit for bit; this checks the
    header sizes, offsets, names and un-permutation for these types (the block math is the gguf
    package's own dequantize for both sides: not independently verified here)."""
    import torch
    import transformers as tf
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType as T

    t = T[qtype]
    torch.manual_seed(0)
    model = tf.LlamaForCausalLM(tf.LlamaConfig(vocab_size=64, hidden_size=256, intermediate_size=256, num_hidden_layers=1,
                                               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64))
    model.save_pretrained(tmp_path / "m", safe_serialization=True)
    rng = np.random.default_rng(0)
    block, size = GGML_QUANT_SIZES[t]
    raw = {}
    for name, rows in (("blk.0.attn_q.weight", 256), ("blk.0.attn_k.weight", 128), ("blk.0.ffn_up.weight", 256)):
        b = rng.integers(0, 256, (rows, 256 // block, size), dtype=np.uint8)
        for at in ((0, 2) if t == T.Q4_K else (size - 2,)):   # d (and dmin): finite fp16
            b[..., at:at + 2] = rng.uniform(-0.01, 0.01, (rows, 256 // block, 1)).astype(np.float16).view(np.uint8)
        raw[name] = (b.reshape(rows, -1), t)
    path = write_gguf(tmp_path / "m", tmp_path / f"{qtype}.gguf", raw_blocks=raw)
    oracle = _oracle_tensors(path, tmp_path / "m")
    with materialised(path) as src:
        got = load_file(str(src.model_dir / "model.safetensors"))
        assert dict(src.summary.tensor_types)[qtype] == 3
    assert sorted(got) == sorted(oracle) and all(np.array_equal(got[k], oracle[k]) for k in got)
    assert np.abs(got["model.layers.0.self_attn.q_proj.weight"]).max() > 0


def test_inspect_and_fit_read_the_metadata_only(gguf_of):
    """``slmpack inspect`` / ``fit`` / ``--device`` on a .gguf: the spec from metadata and shapes."""
    from slmpack import api
    from slmpack.device_tests import fit_check

    info = api.inspect(gguf_of("Q8_0"))
    assert (info["family"], info["num_layers"], info["vocab_size"], info["weight_files"]) == \
        ("llama", 2, 4098, ["instruct-Q8_0.gguf"])
    report = fit_check(gguf_of("Q8_0"), "rpi4", 256, 8, strict=False)
    assert report.fits and report.num_parameters == info["num_parameters"]


def test_materialisation_is_deterministic_and_removed(gguf_of):
    """Same file, same bytes (so the manifest's checkpoint_sha256 is stable); the temp dir goes away."""
    from slmpack.exporter.checkpoint import checkpoint_digest

    digests, roots = [], []
    for _ in range(2):
        with materialised(gguf_of("Q8_0"), from_gguf=True) as src:
            digests.append((checkpoint_digest(src.model_dir),
                            (src.plan_dir / "quant_plan.safetensors").read_bytes(), (src.plan_dir / "quant_plan.json").read_bytes()))
            roots.append(src.model_dir.parent)
    assert digests[0] == digests[1]
    assert not any(r.exists() for r in roots)


def test_sentencepiece_tokenizer_matches_sentencepiece(tmp_path):
    """``tokenizer.ggml.model = llama``: a SentencePiece BPE model with byte fallback (trained here on
    the bundled text, Llama-2 settings: identity normalization, dummy prefix, whitespace kept),
    written the way convert_hf_to_gguf.py writes a tokenizer.model (pieces, scores, types, no
    merges). The rebuilt tokenizer.json gives sentencepiece's own ids on the parity corpus, decodes
    back to the text, and prepends BOS."""
    import sentencepiece as spm
    from tokenizers import Tokenizer

    from slmpack.bundled import demo_data_dir
    from tests.tiny_models import write_tiny_model

    spm.SentencePieceTrainer.train(input=str(demo_data_dir() / "calibration.txt"), model_prefix=str(tmp_path / "sp"),
                                   vocab_size=600, model_type="bpe", byte_fallback=True, character_coverage=1.0,
                                   normalization_rule_name="identity", remove_extra_whitespaces=False,
                                   unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "sp.model"))
    ckpt = write_tiny_model(tmp_path / "m", "llama", vocab=600)
    path = write_gguf(ckpt, tmp_path / "sp.gguf", spm_model=tmp_path / "sp.model")
    with materialised(path) as src:
        ours = Tokenizer.from_file(str(src.model_dir / "tokenizer.json"))
        cfg = json.loads((src.model_dir / "tokenizer_config.json").read_text())
    lines = (demo_data_dir() / "tokenizer_corpus.txt").read_text(encoding="utf-8").splitlines()
    control = {sp.id_to_piece(i): i for i in range(sp.vocab_size()) if sp.is_control(i) or sp.is_unknown(i)}
    split = re.compile("(" + "|".join(map(re.escape, control)) + ")")

    def expected(line: str) -> list[int]:
        """Control-token strings in the text are those tokens (Hugging Face's added tokens, llama.cpp's
        parse_special), each text segment between them encoded by sentencepiece with its own prefix."""
        return [i for seg in split.split(line) if seg for i in ([control[seg]] if seg in control else sp.encode(seg))]

    assert sum(bool(split.search(line)) for line in lines) > 10
    mismatched = [line for line in lines if ours.encode(line, add_special_tokens=False).ids != expected(line)]
    assert not mismatched, (len(mismatched), mismatched[:3])
    for line in lines:
        assert ours.decode(sp.encode(line)) == sp.decode(sp.encode(line)), line
    assert ours.encode("hello").ids[0] == 1 and cfg["add_bos_token"] and cfg["unk_token"] == "<unk>"


def _trained_byte_level(pre: str):
    """A byte-level BPE tokenizer.json laid out as that family's own (splits from transformers'
    sources: Qwen2's PRETOKENIZE_REGEX, the Llama-3 split transformers' GGUF code uses; SmolLM2's
    digit split), trained here on the bundled text."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers as pt, trainers
    from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS

    from slmpack.bundled import demo_data_dir

    tok = Tokenizer(models.BPE(ignore_merges=pre == "llama-bpe"))
    if pre == "smollm":
        tok.pre_tokenizer = pt.Sequence([pt.Digits(individual_digits=True), pt.ByteLevel(add_prefix_space=False)])
    else:
        tok.pre_tokenizer = pt.Sequence([pt.Split(Regex(GGUF_PRE_TOKENIZER_SPLITS[pre]), behavior="isolated"),
                                         pt.ByteLevel(add_prefix_space=False, use_regex=False)])
    if pre == "qwen2":
        tok.normalizer = normalizers.NFC()
    tok.decoder = decoders.ByteLevel()
    text = (demo_data_dir() / "calibration.txt").read_text(encoding="utf-8").splitlines()
    tok.train_from_iterator(text, trainers.BpeTrainer(vocab_size=800, special_tokens=["<|endoftext|>"],
                                                      initial_alphabet=pt.ByteLevel.alphabet()))
    return tok


@pytest.mark.parametrize("pre", ["llama-bpe", "qwen2", "smollm"])
def test_pre_tokenizers_reproduce_their_family(tmp_path, pre):
    from tokenizers import Tokenizer

    from slmpack.bundled import demo_data_dir
    from tests.tiny_models import write_tiny_model

    orig = _trained_byte_level(pre)
    ckpt = write_tiny_model(tmp_path / "m", "llama", vocab=orig.get_vocab_size())
    orig.save(str(ckpt / "tokenizer.json"))
    (ckpt / "generation_config.json").write_text(json.dumps({"bos_token_id": 0, "eos_token_id": 0}))
    with materialised(write_gguf(ckpt, tmp_path / "t.gguf", pre=pre)) as src:
        ours = Tokenizer.from_file(str(src.model_dir / "tokenizer.json"))
    lines = (demo_data_dir() / "tokenizer_corpus.txt").read_text(encoding="utf-8").splitlines()
    bad = [line for line in lines if ours.encode(line).ids != orig.encode(line).ids]
    assert not bad, (len(bad), bad[:3])
