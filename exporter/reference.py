"""Our export-friendly reference decoder, built from a ModelSpec (never from code in a checkpoint).

Module names are the Hugging Face Llama names (``model.layers.0.self_attn.q_proj`` ...), so
checkpoint weights map by name and calibration hooks see familiar names. Positions are explicit
and the KV cache is a pluggable strategy (see ``kv_cache.py``), so the same module serves every
target's cache layout. Attention is written out (matmul/softmax) so that every converter
understands it; fusion passes may later replace it with fused ops.
"""
from __future__ import annotations

import torch
from torch import nn

from slmpack.errors import BadInputError
from slmpack.exporter.spec import ModelSpec


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Attention(nn.Module):
    def __init__(self, spec: ModelSpec, layer: int):
        super().__init__()
        self.layer, self.h, self.kv, self.hd = layer, spec.num_heads, spec.num_kv_heads, spec.head_dim
        d, b = spec.hidden_size, spec.attention_bias
        self.q_proj = nn.Linear(d, self.h * self.hd, bias=b)
        self.k_proj = nn.Linear(d, self.kv * self.hd, bias=b)
        self.v_proj = nn.Linear(d, self.kv * self.hd, bias=b)
        self.o_proj = nn.Linear(self.h * self.hd, d, bias=False)
        self.scale = self.hd ** -0.5

    def forward(self, x, cos, sin, mask, cache):
        bsz, s, _ = x.shape
        q = self.q_proj(x).view(bsz, s, self.h, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(bsz, s, self.kv, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(bsz, s, self.kv, self.hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k_all, v_all = cache.update(self.layer, k, v)
        groups = self.h // self.kv
        if groups > 1:  # GQA: share each kv head across its query group
            t = k_all.shape[2]
            k_all = k_all[:, :, None].expand(bsz, self.kv, groups, t, self.hd).reshape(bsz, self.h, t, self.hd)
            v_all = v_all[:, :, None].expand(bsz, self.kv, groups, t, self.hd).reshape(bsz, self.h, t, self.hd)
        scores = torch.matmul(q, k_all.transpose(2, 3)) * self.scale + mask
        probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
        out = torch.matmul(probs, v_all).transpose(1, 2).reshape(bsz, s, self.h * self.hd)
        return self.o_proj(out)


class MLP(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        d, f, b = spec.hidden_size, spec.intermediate_size, spec.mlp_bias
        self.gate_proj = nn.Linear(d, f, bias=b)
        self.up_proj = nn.Linear(d, f, bias=b)
        self.down_proj = nn.Linear(f, d, bias=b)

    def forward(self, x):
        return self.down_proj(nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, spec: ModelSpec, layer: int):
        super().__init__()
        self.self_attn = Attention(spec, layer)
        self.mlp = MLP(spec)
        self.input_layernorm = RMSNorm(spec.hidden_size, spec.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(spec.hidden_size, spec.rms_norm_eps)

    def forward(self, x, cos, sin, mask, cache):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class Backbone(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.embed_tokens = nn.Embedding(spec.vocab_size, spec.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(spec, i) for i in range(spec.num_layers))
        self.norm = RMSNorm(spec.hidden_size, spec.rms_norm_eps)


def rope_tables(spec: ModelSpec, max_context: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos / sin tables [max_context, head_dim] (attention scaling folded in, as HF applies it)."""
    inv, attn_scale = spec.rope.inv_freq_and_scale(spec.head_dim, spec.max_position_embeddings)
    inv_t = torch.tensor(inv, dtype=torch.float32)
    freqs = torch.arange(max_context, dtype=torch.float32)[:, None] * inv_t[None, :]
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos() * attn_scale, emb.sin() * attn_scale


class ReferenceModel(nn.Module):
    """Decoder with explicit positions. ``step`` runs S new tokens against a cache strategy."""

    def __init__(self, spec: ModelSpec, max_context: int):
        super().__init__()
        self.spec, self.max_context = spec, max_context
        self.model = Backbone(spec)
        self.lm_head = nn.Linear(spec.hidden_size, spec.vocab_size, bias=False)
        if spec.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        cos, sin = rope_tables(spec, max_context)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def step(self, input_ids: torch.Tensor, positions: torch.Tensor, cache,
             key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids [B,S], positions [S] (absolute) -> logits [B,S,V]."""
        x = self.model.embed_tokens(input_ids)
        cos = self.rope_cos[positions].to(x.dtype)[None, None]
        sin = self.rope_sin[positions].to(x.dtype)[None, None]
        key_pos = cache.key_positions(input_ids.shape[1], device=input_ids.device)
        allowed = key_pos[None, :] <= positions[:, None]                       # [S, T]
        if self.spec.sliding_window is not None and self.spec.sliding_window < self.max_context:
            allowed = allowed & (key_pos[None, :] > positions[:, None] - self.spec.sliding_window)
        if key_mask is not None:                                              # [B, T] 1 = attend
            allowed = allowed[None, None] & key_mask[:, None, None, :].bool()
        mask = torch.where(allowed, 0.0, float("-inf")).to(x.dtype)
        for layer in self.model.layers:
            x = layer(x, cos, sin, mask, cache)
        return self.lm_head(self.model.norm(x))


def build_reference(spec: ModelSpec, state_dict: dict[str, torch.Tensor], max_context: int) -> ReferenceModel:
    """Instantiate the reference module and load weights by name (fp32). Strict: mismatches are errors."""
    with torch.device("meta"):
        model = ReferenceModel(spec, max_context)
    expected = {k: v for k, v in model.state_dict().items()}
    if spec.tie_word_embeddings:
        expected.pop("lm_head.weight", None)
    sd = dict(state_dict)
    if spec.tie_word_embeddings:
        sd.pop("lm_head.weight", None)
    sd = {k: v for k, v in sd.items() if not k.endswith("rotary_emb.inv_freq")}
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensor(s) e.g. {missing[0]}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} tensor(s) e.g. {unexpected[0]}")
        raise BadInputError("config.json and weights disagree: " + "; ".join(parts), "E_WEIGHTS_MISMATCH",
                            details={"missing": missing, "unexpected": unexpected})
    for name, ref in expected.items():
        if tuple(sd[name].shape) != tuple(ref.shape):
            raise BadInputError(
                f"config.json and weights disagree: {name} has shape {tuple(sd[name].shape)}, "
                f"config implies {tuple(ref.shape)}", "E_WEIGHTS_MISMATCH")
    return assemble_reference(spec, max_context, {k: v.to(torch.float32) for k, v in sd.items()})


def assemble_reference(spec: ModelSpec, max_context: int, state_dict: dict[str, torch.Tensor],
                       rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> ReferenceModel:
    """A ReferenceModel whose parameters *are* ``state_dict``'s tensors (meta init + assign=True:
    no random init, no second copy). A tied lm_head is re-tied to the embedding; ``rope`` reuses
    existing cos/sin tables (the only non-persistent buffers), else they are computed."""
    with torch.device("meta"):
        model = ReferenceModel(spec, max_context)
    model.load_state_dict(state_dict, strict=False, assign=True)
    model.rope_cos, model.rope_sin = rope if rope is not None else rope_tables(spec, max_context)
    if spec.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if meta:  # a module gained a buffer or parameter that is neither in the state dict nor rebuilt here
        raise RuntimeError(f"reference tensors left on the meta device: {meta[:3]}")
    return model
