"""Checkpoint tensor names -> the reference module's (Llama) names, for every ``WeightLayout``.

Pure renames and splits by name, decided by the spec (from config.json), never by code in the
checkpoint: Phi-3's fused ``qkv_proj`` / ``gate_up_proj`` are split, GPT-2's Conv1D weights
([in, out]) are transposed and its fused ``c_attn`` split, Phi-2's ``dense`` / ``fc1`` / ``fc2`` /
``final_layernorm`` renamed, mixture-of-experts tensors stacked into the reference's [E, ...]
``mlp.experts.{gate,up,down}_proj`` (``moe.py``). Gemma's norm offset (the norm multiplies by ``1 + w``) is folded into
the norm weights here, so the module computes a plain RMSNorm.
"""
from __future__ import annotations

import re

import torch

from slmpack.exporter.deltas import ExpertLayout, WeightLayout
from slmpack.exporter.spec import ModelSpec

_PHI = [(r"\.self_attn\.dense\.", ".self_attn.o_proj."), (r"\.mlp\.fc1\.", ".mlp.up_proj."),
        (r"\.mlp\.fc2\.", ".mlp.down_proj."), (r"\.self_attn\.q_layernorm\.", ".self_attn.q_norm."),
        (r"\.self_attn\.k_layernorm\.", ".self_attn.k_norm."), (r"^model\.final_layernorm\.", "model.norm.")]
_GPT2 = [(r"^transformer\.wte\.", "model.embed_tokens."), (r"^transformer\.wpe\.", "model.embed_positions."),
         (r"^transformer\.ln_f\.", "model.norm."), (r"^transformer\.h\.(\d+)\.ln_1\.", r"model.layers.\1.input_layernorm."),
         (r"^transformer\.h\.(\d+)\.ln_2\.", r"model.layers.\1.post_attention_layernorm."),
         (r"^transformer\.h\.(\d+)\.attn\.c_proj\.", r"model.layers.\1.self_attn.o_proj."),
         (r"^transformer\.h\.(\d+)\.mlp\.c_fc\.", r"model.layers.\1.mlp.up_proj."),
         (r"^transformer\.h\.(\d+)\.mlp\.c_proj\.", r"model.layers.\1.mlp.down_proj."),
         (r"^transformer\.h\.(\d+)\.attn\.c_attn\.", r"model.layers.\1.self_attn.qkv.")]
_MOE_ROUTER = {ExpertLayout.MIXTRAL: r"\.block_sparse_moe\.gate\.weight$",
               ExpertLayout.GRANITE_FUSED: r"\.block_sparse_moe\.router\.layer\.weight$",
               ExpertLayout.QWEN2_MOE: r"\.mlp\.gate\.weight$"}
# per-expert tensors -> (layer prefix, expert, reference part); others (Granite) are fused already
_PER_EXPERT = {ExpertLayout.MIXTRAL: re.compile(r"^(.*)\.block_sparse_moe\.experts\.(\d+)\.(w1|w2|w3)\.weight$"),
               ExpertLayout.QWEN2_MOE: re.compile(r"^(.*)\.mlp\.experts\.(\d+)\.((?:gate|up|down)_proj)\.weight$")}
_PART = {"w1": "gate_proj", "w3": "up_proj", "w2": "down_proj", "gate_proj": "gate_proj", "up_proj": "up_proj",
         "down_proj": "down_proj"}
_CONV1D = re.compile(r"\.(self_attn\.(qkv|o_proj)|mlp\.(up_proj|down_proj))\.weight$")


def _rename(sd: dict, rules) -> dict:
    out = {}
    for name, t in sd.items():
        for pat, rep in rules:
            name = re.sub(pat, rep, name)
        out[name] = t
    return out


def _split(sd: dict, fused: str, parts: list[tuple[str, int]]) -> None:
    """Split every ``...<fused>.{weight,bias}`` along dim 0 into ``...<part>.{weight,bias}``."""
    for name in [n for n in sd if f".{fused}." in n]:
        t = sd.pop(name)
        sizes = [n for _, n in parts]
        if t.shape[0] != sum(sizes):  # leave it: the strict shape check reports the mismatch
            sd[name] = t
            continue
        for (part, _), piece in zip(parts, torch.split(t, sizes, dim=0)):
            sd[name.replace(f".{fused}.", f".{part}.")] = piece.contiguous()


def _stack_experts(sd: dict, pattern: re.Pattern, experts: int) -> None:
    """``<layer>.<...>.experts.<i>.<part>.weight`` (Mixtral w1/w3/w2, Qwen2-MoE gate/up/down_proj) ->
    ``<layer>.mlp.experts.{gate,up,down}_proj`` [E, ...]. A layer whose experts are not exactly
    0..E-1 is left as is (the strict load names the tensors)."""
    groups: dict[tuple[str, str], dict[int, str]] = {}
    for name in sd:
        m = pattern.match(name)
        if m:
            groups.setdefault((m.group(1), _PART[m.group(3)]), {})[int(m.group(2))] = name
    for (layer, part), names in sorted(groups.items()):
        if sorted(names) == list(range(experts)):
            sd[f"{layer}.mlp.experts.{part}"] = torch.stack([sd.pop(names[i]) for i in range(experts)])


def _moe_names(sd: dict, layout: ExpertLayout, experts: int) -> dict:
    sd = _rename(sd, [(_MOE_ROUTER[layout], ".mlp.router.weight")])
    if layout in _PER_EXPERT:
        _stack_experts(sd, _PER_EXPERT[layout], experts)
        return sd
    for name in [n for n in sd if n.endswith(".block_sparse_moe.input_linear.weight")]:   # [E, 2F, D]: gate | up
        t, layer = sd.pop(name), name[:-len(".block_sparse_moe.input_linear.weight")]
        gate, up = t.chunk(2, dim=1)
        sd[f"{layer}.mlp.experts.gate_proj"], sd[f"{layer}.mlp.experts.up_proj"] = gate.contiguous(), up.contiguous()
    return _rename(sd, [(r"\.block_sparse_moe\.output_linear\.weight$", ".mlp.experts.down_proj")])


def to_reference_names(spec: ModelSpec, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    layout = spec.deltas.weights
    sd = dict(state_dict)
    q, kv = spec.num_heads * spec.head_dim, spec.num_kv_heads * spec.head_dim
    if layout is WeightLayout.PHI:
        sd = _rename(sd, _PHI)
    elif layout is WeightLayout.PHI3_FUSED:
        _split(sd, "qkv_proj", [("q_proj", q), ("k_proj", kv), ("v_proj", kv)])
        _split(sd, "gate_up_proj", [("gate_proj", spec.intermediate_size), ("up_proj", spec.intermediate_size)])
    elif layout is WeightLayout.GPT2_CONV1D:
        sd = {k: v for k, v in _rename(sd, _GPT2).items() if not re.search(r"\.attn\.(masked_)?bias$", k)}
        sd = {k: (v.t().contiguous() if _CONV1D.search(k) and v.dim() == 2 else v) for k, v in sd.items()}
        _split(sd, "qkv", [("q_proj", q), ("k_proj", kv), ("v_proj", kv)])
    if spec.deltas.moe is not None:
        sd = _moe_names(sd, spec.deltas.moe.layout, spec.deltas.moe.num_experts)
    if spec.deltas.norm_offset:
        sd = {k: (v.float() + spec.deltas.norm_offset if re.search(r"norm\.weight$", k) else v) for k, v in sd.items()}
    return sd
