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
from slmpack.exporter.blocks import MLP, Attention, RMSNorm, make_norm, rotate_half, soft_cap
from slmpack.exporter.deltas import BlockStyle, Positions
from slmpack.exporter.moe import SparseMoE
from slmpack.exporter.rope_tables import rope_tables
from slmpack.exporter.spec import ModelSpec
from slmpack.exporter.weight_map import to_reference_names

__all__ = ["Attention", "MLP", "RMSNorm", "ReferenceModel", "assemble_reference", "build_reference",
           "rope_tables", "rotate_half"]


class DecoderLayer(nn.Module):
    """One block; ``spec.deltas.block`` says where the norms sit (see ``BlockStyle``)."""

    def __init__(self, spec: ModelSpec, layer: int):
        super().__init__()
        self.style = spec.deltas.block
        self.residual_multiplier = spec.deltas.residual_multiplier
        d = spec.hidden_size
        self.self_attn = Attention(spec, layer)
        self.mlp = MLP(spec) if spec.deltas.moe is None else SparseMoE(spec)
        if self.style is not BlockStyle.POST_NORM:
            self.input_layernorm = make_norm(spec, d)
        if self.style is not BlockStyle.PARALLEL:
            self.post_attention_layernorm = make_norm(spec, d)
        if self.style in (BlockStyle.SANDWICH, BlockStyle.POST_NORM):
            self.post_feedforward_layernorm = make_norm(spec, d)
        if self.style is BlockStyle.SANDWICH:
            self.pre_feedforward_layernorm = make_norm(spec, d)

    def _res(self, y):
        return y if self.residual_multiplier == 1.0 else y * self.residual_multiplier

    def forward(self, x, cos, sin, mask, cache):
        if self.style is BlockStyle.PRE_NORM:
            x = x + self._res(self.self_attn(self.input_layernorm(x), cos, sin, mask, cache))
            return x + self._res(self.mlp(self.post_attention_layernorm(x)))
        if self.style is BlockStyle.PARALLEL:
            h = self.input_layernorm(x)
            return x + self.self_attn(h, cos, sin, mask, cache) + self.mlp(h)
        if self.style is BlockStyle.SANDWICH:
            a = self.self_attn(self.input_layernorm(x), cos, sin, mask, cache)
            x = x + self.post_attention_layernorm(a)
            return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))
        x = x + self.post_attention_layernorm(self.self_attn(x, cos, sin, mask, cache))    # POST_NORM
        return x + self.post_feedforward_layernorm(self.mlp(x))


class PositionTable(nn.Module):
    """Learned absolute positions (GPT-2 ``wpe``). Deliberately not an ``nn.Embedding``: quantization
    plans cover Linear/Embedding weights only, so every recipe keeps the position table float."""

    def __init__(self, positions: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(positions, dim))

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return self.weight[positions]


class Backbone(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.embed_tokens = nn.Embedding(spec.vocab_size, spec.hidden_size)
        if spec.deltas.positions is Positions.LEARNED:
            self.embed_positions = PositionTable(spec.max_position_embeddings, spec.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(spec, i) for i in range(spec.num_layers))
        self.norm = make_norm(spec, spec.hidden_size)


class ReferenceModel(nn.Module):
    """Decoder with explicit positions. ``step`` runs S new tokens against a cache strategy."""

    def __init__(self, spec: ModelSpec, max_context: int):
        super().__init__()
        self.spec, self.max_context = spec, max_context
        self.model = Backbone(spec)
        self.lm_head = nn.Linear(spec.hidden_size, spec.vocab_size, bias=spec.deltas.lm_head_bias)
        if spec.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        for name, table in rope_tables(spec, max_context).items():
            self.register_buffer(name, table, persistent=False)

    def _rope(self, positions: torch.Tensor, local: bool, dtype):
        """cos / sin [1,1,S,rotary_dim] for these positions. LongRoPE: the long table once the
        largest position of the call reaches original_max_position_embeddings (as transformers switches)."""
        if local:
            return (self.rope_cos_local[positions].to(dtype)[None, None],
                    self.rope_sin_local[positions].to(dtype)[None, None])
        cos, sin = self.rope_cos[positions], self.rope_sin[positions]
        lr = self.spec.deltas.longrope
        if lr is not None:
            use_long = positions.max() >= lr.original_max_position_embeddings
            cos = torch.where(use_long, self.rope_cos_long[positions], cos)
            sin = torch.where(use_long, self.rope_sin_long[positions], sin)
        return cos.to(dtype)[None, None], sin.to(dtype)[None, None]

    def step(self, input_ids: torch.Tensor, positions: torch.Tensor, cache,
             key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids [B,S], positions [S] (absolute) -> logits [B,S,V]."""
        spec, dl = self.spec, self.spec.deltas
        x = self.model.embed_tokens(input_ids)
        if dl.embedding_scale != 1.0:
            x = x * dl.embedding_scale
        if dl.positions is Positions.LEARNED:
            x = x + self.model.embed_positions(positions)[None]
        ropes = {False: self._rope(positions, False, x.dtype)}
        if dl.local_rope_theta is not None:
            ropes[True] = self._rope(positions, True, x.dtype)
        key_pos = cache.key_positions(input_ids.shape[1], device=input_ids.device)
        causal = key_pos[None, :] <= positions[:, None]                       # [S, T]
        masks: dict[int | None, torch.Tensor] = {}
        for window in sorted({w if w is not None and w < self.max_context else None for w in spec.windows},
                             key=lambda w: -1 if w is None else w):
            allowed = causal if window is None else causal & (key_pos[None, :] > positions[:, None] - window)
            if key_mask is not None:                                          # [B, T] 1 = attend
                allowed = allowed[None, None] & key_mask[:, None, None, :].bool()
            masks[window] = torch.where(allowed, 0.0, float("-inf")).to(x.dtype)
        for i, layer in enumerate(self.model.layers):
            w, local = spec.windows[i], spec.layer(i).local_rope
            cos, sin = ropes[local]
            x = layer(x, cos, sin, masks[w if w is not None and w < self.max_context else None], cache)
        logits = self.lm_head(self.model.norm(x))
        if dl.logits_divisor != 1.0:
            logits = logits / dl.logits_divisor
        return soft_cap(logits, dl.final_softcap)


def build_reference(spec: ModelSpec, state_dict: dict[str, torch.Tensor], max_context: int) -> ReferenceModel:
    """Instantiate the reference module and load weights by name (fp32). Strict: mismatches are errors."""
    with torch.device("meta"):
        model = ReferenceModel(spec, max_context)
    expected = {k: v for k, v in model.state_dict().items()}
    if spec.tie_word_embeddings:
        expected.pop("lm_head.weight", None)
    sd = to_reference_names(spec, state_dict)
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
                       rope: dict[str, torch.Tensor] | None = None) -> ReferenceModel:
    """A ReferenceModel whose parameters *are* ``state_dict``'s tensors (meta init + assign=True:
    no random init, no second copy). A tied lm_head is re-tied to the embedding; ``rope`` reuses
    existing cos/sin tables (``rope_tables``: the only non-persistent buffers), else they are computed."""
    with torch.device("meta"):
        model = ReferenceModel(spec, max_context)
    model.load_state_dict(state_dict, strict=False, assign=True)
    for name, table in (rope if rope is not None else rope_tables(spec, max_context)).items():
        setattr(model, name, table)
    if spec.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if meta:  # a module gained a buffer or parameter that is neither in the state dict nor rebuilt here
        raise RuntimeError(f"reference tensors left on the meta device: {meta[:3]}")
    return model
