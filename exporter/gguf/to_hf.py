"""GGUF metadata and tensors -> a Hugging Face ``config.json`` and state dict (llama, qwen2, qwen3).

Names and conventions are llama.cpp's (``convert_hf_to_gguf.py``, ``gguf.TensorNameMap``):
``blk.N.attn_q.weight`` is ``model.layers.N.self_attn.q_proj.weight`` and so on; a GGUF without
``output.weight`` has tied embeddings. For the ``llama`` architecture llama.cpp permutes the rows
of q and k (its RoPE rotates adjacent pairs, Hugging Face's rotates halves):
``w.reshape(heads, 2, d // heads // 2, ...).swapaxes(1, 2)``; ``row_order`` gives the inverse row
permutation, applied to values and, for ``--quant from-gguf``, to the integer blocks (rows move
whole, so the integers stay exact). qwen2 and qwen3 are stored unpermuted. Every tensor of the file
must map to a weight and every weight must be present with the shape the metadata implies.
"""
from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np

from slmpack.errors import UnsupportedError
from slmpack.exporter.gguf.header import invalid
from slmpack.exporter.gguf.reader import GgufFile

ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}
PERMUTED_QK = ("llama",)
GLOBAL = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
          "output.weight": "lm_head.weight"}
BLOCK = {"attn_norm.weight": "input_layernorm.weight", "ffn_norm.weight": "post_attention_layernorm.weight",
         "attn_q.weight": "self_attn.q_proj.weight", "attn_q.bias": "self_attn.q_proj.bias",
         "attn_k.weight": "self_attn.k_proj.weight", "attn_k.bias": "self_attn.k_proj.bias",
         "attn_v.weight": "self_attn.v_proj.weight", "attn_v.bias": "self_attn.v_proj.bias",
         "attn_output.weight": "self_attn.o_proj.weight", "attn_output.bias": "self_attn.o_proj.bias",
         "attn_q_norm.weight": "self_attn.q_norm.weight", "attn_k_norm.weight": "self_attn.k_norm.weight",
         "ffn_gate.weight": "mlp.gate_proj.weight", "ffn_up.weight": "mlp.up_proj.weight",
         "ffn_down.weight": "mlp.down_proj.weight"}
_BLK = re.compile(r"blk\.(\d+)\.(.+)")


def architecture(g: GgufFile) -> str:
    arch = g.value("general.architecture", str)
    if arch not in ARCHITECTURES:
        raise UnsupportedError(f"{g.where}: GGUF architecture {arch!r}; slmpack reads "
                               f"{', '.join(sorted(ARCHITECTURES))}", "E_GGUF_UNSUPPORTED",
                               details={"architecture": arch, "supported": sorted(ARCHITECTURES)})
    return arch


def hf_name(g: GgufFile, name: str, layers: int) -> str:
    if name in GLOBAL:
        return GLOBAL[name]
    m = _BLK.fullmatch(name)
    if m and int(m.group(1)) < layers and m.group(2) in BLOCK:
        return f"model.layers.{int(m.group(1))}.{BLOCK[m.group(2)]}"
    raise UnsupportedError(f"{g.where}: tensor {name} has no Hugging Face counterpart slmpack knows (e.g. "
                           "rope_freqs: llama3-style RoPE factors are not read)", "E_GGUF_UNSUPPORTED",
                           details={"tensor": name})


def _rope(g: GgufFile, arch: str, head_dim: int) -> dict:
    dims = g.value(f"{arch}.rope.dimension_count", int, head_dim)
    if dims != head_dim:
        raise UnsupportedError(f"{g.where}: partial rotary ({dims} of {head_dim} dims) is not read",
                               "E_GGUF_UNSUPPORTED")
    rope = {"rope_type": "default", "rope_theta": g.value(f"{arch}.rope.freq_base", float, 10000.0)}
    kind = g.value(f"{arch}.rope.scaling.type", str, "none")
    if kind == "linear":
        rope.update(rope_type="linear", factor=g.value(f"{arch}.rope.scaling.factor", float))
    elif kind != "none":
        raise UnsupportedError(f"{g.where}: RoPE scaling {kind!r} is not read (none, linear)", "E_GGUF_UNSUPPORTED")
    return rope


def hf_config(g: GgufFile) -> dict:
    """config.json for the file (numbers from its metadata, ties and biases from its tensors)."""
    arch = architecture(g)
    if "token_embd.weight" not in g.tensors:
        raise invalid(g.where, "no token_embd.weight")
    hidden, heads = g.value(f"{arch}.embedding_length", int), g.value(f"{arch}.attention.head_count", int)
    kv = g.value(f"{arch}.attention.head_count_kv", int, heads)
    if min(hidden, heads, kv) < 1 or heads % kv:
        raise invalid(g.where, f"{heads} heads and {kv} kv heads for width {hidden}")
    head_dim = g.value(f"{arch}.attention.key_length", int, hidden // heads)
    if g.value(f"{arch}.attention.value_length", int, head_dim) != head_dim:
        raise UnsupportedError(f"{g.where}: key and value head sizes differ", "E_GGUF_UNSUPPORTED")
    vocab = g.tensors["token_embd.weight"].shape[0]
    if g.value(f"{arch}.vocab_size", int, vocab) != vocab:
        raise invalid(g.where, f"{arch}.vocab_size disagrees with token_embd.weight ({vocab} rows)")
    layers = g.value(f"{arch}.block_count", int)
    if not 1 <= layers <= len(g.tensors):   # every block has tensors: a count the file cannot hold is refused
        raise invalid(g.where, f"{arch}.block_count {layers} for a file of {len(g.tensors)} tensors")
    cfg = {"architectures": [ARCHITECTURES[arch]], "model_type": arch, "hidden_size": hidden,
           "num_hidden_layers": layers,
           "intermediate_size": g.value(f"{arch}.feed_forward_length", int),
           "num_attention_heads": heads, "num_key_value_heads": kv, "head_dim": head_dim, "vocab_size": vocab,
           "rms_norm_eps": g.value(f"{arch}.attention.layer_norm_rms_epsilon", float),
           "max_position_embeddings": g.value(f"{arch}.context_length", int),
           "rope_parameters": _rope(g, arch, head_dim), "hidden_act": "silu",
           "tie_word_embeddings": "output.weight" not in g.tensors, "dtype": "float32"}
    if arch != "qwen2":   # Qwen2's q/k/v always have biases; llama and qwen3 say so by their tensors
        cfg["attention_bias"] = "blk.0.attn_q.bias" in g.tensors
    for key, name in (("bos_token_id", "tokenizer.ggml.bos_token_id"), ("eos_token_id", "tokenizer.ggml.eos_token_id")):
        if name in g.metadata:
            cfg[key] = g.value(name, int)
    return cfg


def expected_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    """Every weight a checkpoint with this config has, with its shape."""
    h, hd, inter = cfg["hidden_size"], cfg["head_dim"], cfg["intermediate_size"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    bias = cfg.get("attention_bias", cfg["model_type"] == "qwen2")
    out = {"model.embed_tokens.weight": (cfg["vocab_size"], h), "model.norm.weight": (h,)}
    if not cfg["tie_word_embeddings"]:
        out["lm_head.weight"] = (cfg["vocab_size"], h)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out.update({p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
                    p + "self_attn.q_proj.weight": (q, h), p + "self_attn.k_proj.weight": (kv, h),
                    p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, q),
                    p + "mlp.gate_proj.weight": (inter, h), p + "mlp.up_proj.weight": (inter, h),
                    p + "mlp.down_proj.weight": (h, inter)})
        if bias:
            out.update({p + "self_attn.q_proj.bias": (q,), p + "self_attn.k_proj.bias": (kv,),
                        p + "self_attn.v_proj.bias": (kv,)})
            if cfg.get("attention_bias"):   # llama / qwen3: attention_bias covers o_proj too
                out[p + "self_attn.o_proj.bias"] = (h,)
        if cfg["model_type"] == "qwen3":
            out.update({p + "self_attn.q_norm.weight": (hd,), p + "self_attn.k_norm.weight": (hd,)})
    return out


def name_map(g: GgufFile, cfg: dict) -> dict[str, str]:
    """GGUF name -> HF name for every tensor; refuses extra, missing and misshapen tensors."""
    want = expected_shapes(cfg)
    names = {n: hf_name(g, n, cfg["num_hidden_layers"]) for n in g.tensors}
    missing = sorted(set(want) - set(names.values()))
    extra = sorted(n for n, hf in names.items() if hf not in want)
    if missing or extra:
        raise invalid(g.where, f"tensors do not match the metadata: missing {missing[:3]}, unexpected {extra[:3]}")
    for n, hf in names.items():
        if g.tensors[n].shape != want[hf]:
            raise invalid(g.where, f"tensor {n} has shape {list(g.tensors[n].shape)}, the metadata implies "
                                   f"{list(want[hf])}")
    return names


def row_order(cfg: dict, hf: str) -> np.ndarray | None:
    """Rows of the GGUF tensor in Hugging Face order (llama q/k), or None (unchanged)."""
    if cfg["model_type"] not in PERMUTED_QK or not re.search(r"\.(q|k)_proj\.(weight|bias)$", hf):
        return None
    heads = cfg["num_attention_heads"] if ".q_proj." in hf else cfg["num_key_value_heads"]
    rows = heads * cfg["head_dim"]
    return np.arange(rows).reshape(heads, rows // heads // 2, 2).swapaxes(1, 2).reshape(rows)   # the inverse


def state_dict(g: GgufFile, cfg: dict) -> Iterator[tuple[str, np.ndarray]]:
    """(HF name, float32 array) for every tensor, dequantized and un-permuted, in name order."""
    names = name_map(g, cfg)
    for n in sorted(names, key=names.get):
        values = g.dequantized(n)
        order = row_order(cfg, names[n])
        yield names[n], np.ascontiguousarray(values if order is None else values[order])
