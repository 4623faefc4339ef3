"""Write a Hugging Face checkpoint directory as a GGUF file with ``gguf.GGUFWriter``, the way
llama.cpp's ``convert_hf_to_gguf.py`` does (test helper; no committed binaries):

* metadata under ``{arch}.*`` (context_length, embedding_length, block_count, feed_forward_length,
  attention.head_count[_kv], attention.layer_norm_rms_epsilon, rope.freq_base,
  rope.dimension_count; qwen3 also attention.key_length / value_length);
* tensor names ``token_embd``, ``blk.N.attn_q`` ..., ``output_norm``, ``output`` (absent when tied);
* q/k rows permuted for ``llama`` (``LlamaModel.permute``);
* the byte-level BPE tokenizer: tokens by id, token types (CONTROL for special added tokens,
  USER_DEFINED for other added tokens), merges as ``"a b"``, bos/eos ids, the chat template;
* 2-D weights whose rows are whole blocks in ``qtype`` (quantized by ``gguf.quants.quantize``),
  everything else F32 (llama.cpp keeps norms F32 and falls back for rows that are not whole blocks).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from slmpack.exporter.gguf.to_hf import BLOCK, GLOBAL

# llama.cpp's names (convert_hf_to_gguf.py), the inverse of the reader's map; the tensors the
# reader maps back are compared with transformers' own GGUF loader, which has its own table
HF_TO_GGUF_BLOCK = {hf: gg for gg, hf in BLOCK.items()}
HF_TO_GGUF = {hf: gg for gg, hf in GLOBAL.items()}


def gguf_name(hf: str) -> str:
    if hf in HF_TO_GGUF:
        return HF_TO_GGUF[hf]
    parts = hf.split(".")   # model.layers.N.rest
    return f"blk.{parts[2]}.{HF_TO_GGUF_BLOCK['.'.join(parts[3:])]}"


def permute(w: np.ndarray, n_head: int, n_head_kv: int) -> np.ndarray:
    """convert_hf_to_gguf.py LlamaModel.permute."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_tensors(model_dir: Path) -> dict[str, np.ndarray]:
    """GGUF name -> float32 values as the file stores them (permuted), from the checkpoint."""
    from safetensors.numpy import load_file

    cfg = json.loads((model_dir / "config.json").read_text())
    heads, kv = cfg["num_attention_heads"], cfg.get("num_key_value_heads") or cfg["num_attention_heads"]
    out = {}
    for hf, v in sorted(load_file(str(model_dir / "model.safetensors")).items()):
        v = v.astype(np.float32)
        if cfg["model_type"] == "llama" and (".q_proj." in hf or ".k_proj." in hf):
            v = permute(v, heads, heads if ".q_proj." in hf else kv)
        out[gguf_name(hf)] = v
    return out


def _tokenizer(w, model_dir: Path, pre: str) -> None:
    import gguf

    tok = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = dict(tok["model"]["vocab"])
    added = {a["content"]: a for a in tok.get("added_tokens", [])}
    vocab.update({a["content"]: a["id"] for a in added.values()})
    by_id = {i: t for t, i in vocab.items()}
    tokens = [by_id[i] for i in range(len(by_id))]
    types = [(gguf.TokenType.CONTROL if added[t]["special"] else gguf.TokenType.USER_DEFINED) if t in added
             else gguf.TokenType.NORMAL for t in tokens]
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    gen = json.loads((model_dir / "generation_config.json").read_text())
    w.add_bos_token_id(gen["bos_token_id"])
    eos = gen["eos_token_id"]
    w.add_eos_token_id(eos[0] if isinstance(eos, list) else eos)
    if isinstance(eos, list) and len(eos) > 1:
        w.add_eot_token_id(eos[1])
    w.add_add_bos_token(False)
    template = model_dir / "chat_template.jinja"
    if template.exists():
        w.add_chat_template(template.read_text(encoding="utf-8"))


def _sentencepiece(w, model: Path) -> None:
    """convert_hf_to_gguf.py ``_create_vocab_sentencepiece``: pieces, scores and types from a
    ``tokenizer.model``, ``add_space_prefix`` from its normalizer spec, no merges."""
    import gguf
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    sp = spm.SentencePieceProcessor(model_file=str(model))
    proto = pb.ModelProto()
    proto.ParseFromString(model.read_bytes())
    tt = gguf.TokenType
    types = [tt.UNKNOWN if sp.is_unknown(i) else tt.CONTROL if sp.is_control(i) else tt.UNUSED if sp.is_unused(i)
             else tt.BYTE if sp.is_byte(i) else tt.NORMAL for i in range(sp.vocab_size())]
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list([sp.id_to_piece(i) for i in range(sp.vocab_size())])
    w.add_token_scores([sp.get_score(i) for i in range(sp.vocab_size())])
    w.add_token_types(types)
    w.add_add_space_prefix(proto.normalizer_spec.add_dummy_prefix)
    w.add_bos_token_id(sp.bos_id())
    w.add_eos_token_id(sp.eos_id())
    w.add_unk_token_id(sp.unk_id())


def write_gguf(model_dir: Path, out: Path, qtype=None, *, pre: str = "gpt2", tensors: dict | None = None,
               raw_blocks: dict | None = None, spm_model: Path | None = None) -> Path:
    """``model_dir`` (llama / qwen2 / qwen3 with a byte-level BPE tokenizer, or ``spm_model``: a
    SentencePiece ``tokenizer.model``) -> ``out``.
    ``raw_blocks``: GGUF name -> (uint8 block bytes [rows, row_bytes], type) written as given."""
    import gguf
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType as T
    from gguf.quants import quantize

    qtype = T.F32 if qtype is None else qtype
    cfg = json.loads((model_dir / "config.json").read_text())
    arch = cfg["model_type"]
    w = gguf.GGUFWriter(str(out), arch)
    w.add_name(model_dir.name)
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg.get("num_key_value_heads") or cfg["num_attention_heads"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    rope = cfg.get("rope_parameters") or {}
    w.add_rope_freq_base(rope.get("rope_theta", cfg.get("rope_theta", 10000.0)))
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    w.add_rope_dimension_count(head_dim)
    if arch == "qwen3":
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    w.add_vocab_size(cfg["vocab_size"])
    if spm_model is not None:
        _sentencepiece(w, spm_model)
    elif (model_dir / "tokenizer.json").exists():
        _tokenizer(w, model_dir, pre)
    block = GGML_QUANT_SIZES[qtype][0]
    for name, v in (tensors if tensors is not None else gguf_tensors(model_dir)).items():
        if name in (raw_blocks or {}):
            w.add_tensor(name, raw_blocks[name][0], raw_dtype=raw_blocks[name][1])
        elif qtype in (T.F32, T.F16, T.BF16) or (v.ndim == 2 and v.shape[-1] % block == 0):
            if v.ndim == 1 or qtype is T.F32:
                w.add_tensor(name, v.astype(np.float32))
            elif qtype is T.F16:
                w.add_tensor(name, v.astype(np.float16))
            else:
                w.add_tensor(name, quantize(v, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(name, v.astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out
