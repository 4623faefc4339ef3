"""Builds a tiny schema-v1 ONNX package for the device-test suite (stand-in for the exporter).

A hand-written Llama-style decoder (RMSNorm, RoPE, GQA attention, SwiGLU) with the KV cache as
explicit inputs/outputs under onnxruntime-genai names, exported with torch.onnx (dynamo). The
reference test vectors come from running the same module eagerly in torch, so the package's
vectors are independent of onnxruntime.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 96,
          "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
          "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
          "max_position_embeddings": 128, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
          "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2}


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(dim)), eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope(x, pos, theta):  # x [1, h, S, d], pos [1, S]
    d = x.shape[-1]
    inv = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float32) / d)
    ang = pos.to(torch.float32)[:, None, :, None] * inv  # [1,1,S,d/2]
    cos, sin = torch.cat([ang.cos(), ang.cos()], -1), torch.cat([ang.sin(), ang.sin()], -1)
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return x * cos + torch.cat([-x2, x1], -1) * sin


class Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        h, nh, kv, hd = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
        self.nh, self.kv, self.hd, self.theta = nh, kv, hd, c["rope_theta"]
        self.q, self.k = nn.Linear(h, nh * hd, bias=False), nn.Linear(h, kv * hd, bias=False)
        self.v, self.o = nn.Linear(h, kv * hd, bias=False), nn.Linear(nh * hd, h, bias=False)
        self.gate = nn.Linear(h, c["intermediate_size"], bias=False)
        self.up = nn.Linear(h, c["intermediate_size"], bias=False)
        self.down = nn.Linear(c["intermediate_size"], h, bias=False)
        self.n1, self.n2 = RMSNorm(h, c["rms_norm_eps"]), RMSNorm(h, c["rms_norm_eps"])

    def forward(self, x, pos, mask, pk, pv):
        s = x.shape[1]
        y = self.n1(x)
        q = rope(self.q(y).view(1, s, self.nh, self.hd).transpose(1, 2), pos, self.theta)
        k = rope(self.k(y).view(1, s, self.kv, self.hd).transpose(1, 2), pos, self.theta)
        v = self.v(y).view(1, s, self.kv, self.hd).transpose(1, 2)
        k, v = torch.cat([pk, k], 2), torch.cat([pv, v], 2)
        rep = self.nh // self.kv
        kk, vv = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
        att = (q @ kk.transpose(-1, -2)) / self.hd ** 0.5 + mask
        out = (att.softmax(-1) @ vv).transpose(1, 2).reshape(1, s, self.nh * self.hd)
        x = x + self.o(out)
        y = self.n2(x)
        return x + self.down(nn.functional.silu(self.gate(y)) * self.up(y)), k, v


class TinyLlama(nn.Module):
    """forward(input_ids, attention_mask, position_ids, *past) -> (logits, *present)."""

    def __init__(self, c):
        super().__init__()
        self.c = c
        self.embed = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.layers = nn.ModuleList(Layer(c) for _ in range(c["num_hidden_layers"]))
        self.norm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.lm_head = nn.Linear(c["hidden_size"], c["vocab_size"], bias=False)

    def forward(self, input_ids, attention_mask, position_ids, *past):
        x = self.embed(input_ids)
        s, total = input_ids.shape[1], attention_mask.shape[1]
        q_pos = torch.arange(total - s, total).unsqueeze(1)
        allowed = (torch.arange(total).unsqueeze(0) <= q_pos) & (attention_mask[0] > 0).unsqueeze(0)
        mask = torch.zeros(allowed.shape).masked_fill(~allowed, -1e9)[None, None]
        presents = []
        for i, layer in enumerate(self.layers):
            x, k, v = layer(x, position_ids, mask, past[2 * i], past[2 * i + 1])
            presents += [k, v]
        return (self.lm_head(self.norm(x)), *presents)


def make_model(seed: int) -> TinyLlama:
    torch.manual_seed(seed)
    model = TinyLlama(CONFIG).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    return model


class Eager:
    """The Runner protocol in eager torch: the reference the package's vectors come from."""

    def __init__(self, model):
        self.model = model
        self.reset()

    def reset(self):
        c = self.model.c
        z = torch.zeros(1, c["num_key_value_heads"], 0, c["head_dim"])
        self.past = [z] * (2 * c["num_hidden_layers"])

    def _step(self, ids):
        past_len = self.past[0].shape[2]
        ids_t = torch.tensor([ids], dtype=torch.int64)
        with torch.no_grad():
            out = self.model(ids_t, torch.ones(1, past_len + len(ids), dtype=torch.int64),
                             torch.arange(past_len, past_len + len(ids))[None], *self.past)
        self.past = list(out[1:])
        return out[0][0].numpy()

    def prefill(self, ids):
        self.reset()
        return self._step(list(ids))

    def decode(self, token, pos):
        return self._step([token])[-1]


def _greedy(runner, prompt, n, eos):
    logits = runner.prefill(prompt)[-1]
    out, margins = [], []
    while len(out) < n:
        top2 = np.sort(logits)[-2:]
        margins.append(float(top2[1] - top2[0]))
        out.append(int(np.argmax(logits)))
        if out[-1] == eos:
            break
        logits = runner.decode(out[-1], len(prompt) + len(out) - 1)
    return out, min(margins)


def make_vectors(model):
    rng = np.random.default_rng(0)
    v = CONFIG["vocab_size"]
    prompt = rng.integers(3, v, 7).astype(np.int64)
    decode_ids = rng.integers(3, v, 4).astype(np.int64)
    eager = Eager(model)
    prefill_logits = eager.prefill(prompt.tolist())
    decode_logits = np.stack([eager.decode(int(t), len(prompt) + j) for j, t in enumerate(decode_ids)])
    greedy_prompt = rng.integers(3, v, 5).astype(np.int64)
    greedy, margin = _greedy(eager, greedy_prompt.tolist(), 32, CONFIG["eos_token_id"])
    return {"prompt_ids": prompt, "prefill_logits": prefill_logits.astype(np.float32),
            "decode_ids": decode_ids, "decode_logits": decode_logits.astype(np.float32),
            "greedy_prompt_ids": greedy_prompt, "greedy_ids": np.array(greedy, np.int64)}, margin


def export_onnx(model, path: Path) -> None:
    c = CONFIG
    layers, kv, hd = c["num_hidden_layers"], c["num_key_value_heads"], c["head_dim"]
    past = [torch.randn(1, kv, 3, hd) for _ in range(2 * layers)]
    args = (torch.tensor([[5, 6, 7, 8]]), torch.ones(1, 7, dtype=torch.int64), torch.arange(3, 7)[None], *past)
    past_names = [f"past_key_values.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]
    present_names = [f"present.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]
    dyn = torch.export.Dim.DYNAMIC
    shapes = ({1: dyn}, {1: dyn}, {1: dyn}, tuple({2: dyn} for _ in past))
    with torch.no_grad():
        prog = torch.onnx.export(model, args, input_names=["input_ids", "attention_mask", "position_ids", *past_names],
                                 output_names=["logits", *present_names], dynamic_shapes=shapes,
                                 dynamo=True, verbose=False)
    prog.save(str(path))


def write_package(out: Path, *, seed: int = 0) -> Path:
    """Writes a complete schema-v1 ONNX package into ``out`` (created) and returns it."""
    from safetensors.numpy import save_file

    for s in range(seed, seed + 20):  # pick weights whose greedy path has no near-ties
        model = make_model(s)
        vectors, margin = make_vectors(model)
        if margin > 0.05:
            break
    out.mkdir(parents=True, exist_ok=False)
    export_onnx(model, out / "model.onnx")
    save_file(vectors, str(out / "test_vectors.safetensors"))
    vocab = {f"t{i}": i for i in range(CONFIG["vocab_size"])}
    tokenizer = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
                 "normalizer": None, "pre_tokenizer": {"type": "WhitespaceSplit"}, "post_processor": None,
                 "decoder": None, "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "t0"}}
    files = {"tokenizer.json": tokenizer,
             "tokenizer_config.json": {"bos_token": "t1", "eos_token": "t2", "unk_token": "t0"},
             "generation_config.json": {"bos_token_id": 1, "eos_token_id": 2, "do_sample": False},
             "genai_config.json": {"model": {"type": "llama", "context_length": CONFIG["max_position_embeddings"],
                                             "vocab_size": CONFIG["vocab_size"], "decoder": {"filename": "model.onnx"}}}}
    for name, data in files.items():
        (out / name).write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    num_params = sum(p.numel() for p in model.parameters())
    manifest = {
        "schema_version": 1, "target": "onnx", "artifact": "model.onnx",
        "files": {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.iterdir())},
        "model": {"family": "llama", "vocab_size": CONFIG["vocab_size"], "num_layers": CONFIG["num_hidden_layers"],
                  "num_kv_heads": CONFIG["num_key_value_heads"], "head_dim": CONFIG["head_dim"],
                  "hidden_size": CONFIG["hidden_size"], "max_context": CONFIG["max_position_embeddings"],
                  "bos_token_id": 1, "eos_token_id": 2, "num_parameters": num_params},
        "kv_cache": {"layout": "io_concat", "dtype": "float32", "shape": ["batch", "num_kv_heads", "seq", "head_dim"]},
        "tolerance": {"atol": 1e-4, "rtol": 1e-4},
        "runtime": {"name": "onnxruntime", "min_version": "1.20"},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return out


def write_model_dir(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(CONFIG, indent=1) + "\n")
    return out
