"""Llama-family layout facts the algorithms need: which linears share an input, which op feeds them,
and how to fold a per-input-channel scale into that op without changing the model's function.

Groups per decoder layer ``i`` (prefix ``model.layers.{i}``), in execution order::

    q_proj, k_proj, v_proj  <- input_layernorm           (norm: weight /= s)
    o_proj                  <- v_proj, MHA only           (linear: rows and bias /= s)
    gate_proj, up_proj      <- post_attention_layernorm  (norm)
    down_proj               <- up_proj                    (linear; h = act(gate) * up is linear in up)
    lm_head                 <- model.norm                 (norm; only when lm_head is not tied)

``o_proj`` can take a fold from ``v_proj`` only when v's output channels map one-to-one onto o's
input channels (``v.out_features == o.in_features``, i.e. no grouped-query head repetition).
Any other linear forms its own group with no foldable predecessor.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch

_LAYER = re.compile(r"^model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)_proj$")
_ORDER = {"q": 0, "k": 1, "v": 2, "o": 3, "gate": 4, "up": 5, "down": 6}


@dataclass(frozen=True)
class InputGroup:
    """Linear modules (module names, no ``.weight``) that read the same input tensor."""

    members: tuple[str, ...]
    prev: str | None        # module whose output is the members' input, when a fold is possible
    prev_kind: str | None   # "norm" | "linear" | None
    layer: int | None


@dataclass(frozen=True, eq=False)  # holds tensors: compare fields explicitly
class FoldRecord:
    """``consumers``' weight columns were multiplied by ``scales`` and ``prev``'s output divided by
    them (norm weight, or linear rows + bias), leaving the float function unchanged."""

    method: str             # "awq" | "smoothquant"
    prev: str
    prev_kind: str
    consumers: tuple[str, ...]
    scales: torch.Tensor    # float32 [in_features of consumers]
    info: dict              # method details, e.g. {"alpha": 0.5}

    def to_json(self) -> dict:
        return {"method": self.method, "prev": self.prev, "prev_kind": self.prev_kind,
                "consumers": list(self.consumers), "info": dict(sorted(self.info.items()))}


def _key(name: str) -> tuple:
    m = _LAYER.match(name)
    if m:
        return (1, int(m.group(1)), _ORDER.get(m.group(3), 99), name)
    return (0, 0, 0, name) if "embed" in name else (2, 0, 0, name)


def input_groups(in_out: dict[str, tuple[int, int]], tied: frozenset[str] = frozenset()
                 ) -> list[InputGroup]:
    """Group linear modules ``{name: (out_features, in_features)}`` in execution order.

    ``tied`` names modules whose weight is shared with another tensor (folding would change it)."""
    groups: list[InputGroup] = []
    seen: set[str] = set()
    for name in sorted(in_out, key=_key):
        if name in seen:
            continue
        m = _LAYER.match(name)
        group = InputGroup((name,), None, None, None)
        if m:
            i, block, proj = int(m.group(1)), m.group(2), m.group(3)
            base = f"model.layers.{i}"
            if proj in ("q", "k", "v"):
                mem = tuple(f"{base}.self_attn.{p}_proj" for p in "qkv"
                            if f"{base}.self_attn.{p}_proj" in in_out)
                group = InputGroup(mem, f"{base}.input_layernorm", "norm", i)
            elif proj in ("gate", "up"):
                mem = tuple(f"{base}.mlp.{p}_proj" for p in ("gate", "up")
                            if f"{base}.mlp.{p}_proj" in in_out)
                group = InputGroup(mem, f"{base}.post_attention_layernorm", "norm", i)
            elif proj == "o" and block == "self_attn":
                v = f"{base}.self_attn.v_proj"
                ok = v in in_out and in_out[v][0] == in_out[name][1] and v not in tied
                group = InputGroup((name,), v if ok else None, "linear" if ok else None, i)
            elif proj == "down" and block == "mlp":
                up = f"{base}.mlp.up_proj"
                ok = up in in_out and in_out[up][0] == in_out[name][1] and up not in tied
                group = InputGroup((name,), up if ok else None, "linear" if ok else None, i)
            else:
                group = InputGroup((name,), None, None, i)
        elif name == "lm_head" and name not in tied:
            group = InputGroup((name,), "model.norm", "norm", None)
        if any(mem in tied for mem in group.members) and group.prev_kind == "norm":
            group = InputGroup(group.members, None, None, group.layer)
        seen.update(group.members)
        groups.append(group)
    return groups


@torch.no_grad()
def apply_fold(modules: dict[str, torch.nn.Module], prev: str, prev_kind: str,
               consumers: tuple[str, ...], scales: torch.Tensor) -> None:
    """In place: consumers' weight columns *= scales; prev's output /= scales."""
    for c in consumers:
        w = modules[c].weight
        w.copy_((w.to(torch.float32) * scales[None, :]).to(w.dtype))
    p = modules[prev]
    if prev_kind == "norm":
        p.weight.copy_((p.weight.to(torch.float32) / scales).to(p.weight.dtype))
        if getattr(p, "bias", None) is not None:
            p.bias.copy_((p.bias.to(torch.float32) / scales).to(p.bias.dtype))
    else:
        p.weight.copy_((p.weight.to(torch.float32) / scales[:, None]).to(p.weight.dtype))
        if p.bias is not None:
            p.bias.copy_((p.bias.to(torch.float32) / scales).to(p.bias.dtype))
