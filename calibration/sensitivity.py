"""Quantization sensitivity per unit (a group of weight tensors) measured on calibration windows.

A *unit* is what mixed precision assigns one precision to: per decoder layer its attention
projections (q, k, v, o) and its MLP (gate, up, down), plus the embedding (with the lm_head
when tied) and an untied lm_head. The sensitivity of a unit at a weight scheme is the damage
done when *only that unit* is quantized (RTN fake-quant, weights only; everything else fp32),
measured against the fp32 model on the same windows:

* ``kl``: mean KL(fp32 || quantized) over every next-token position (stable, >= 0; used to rank);
* ``ppl_increase_pct``: perplexity increase over fp32 in percent (the budget's unit).

The model contract is the calibration one: ``model(ids[1, T]) -> logits[1, T, V]`` with HF module
names. Weights are modified in place and restored before returning.
"""
from __future__ import annotations

from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from .rtn import fake_quantize
from .schemes import WeightScheme


@dataclass(frozen=True)
class Unit:
    name: str
    tensors: tuple[str, ...]


def units(shapes: Mapping[str, tuple[int, int]], embeddings=(), ties: Mapping[str, str] | None = None
          ) -> list[Unit]:
    """Units in execution order; tied tensors join their owner's unit."""
    ties = dict(ties or {})
    groups: dict[str, list[str]] = {}
    for name in shapes:
        owner = ties.get(name, name)
        parts = owner.split(".")
        if owner in embeddings:
            key = "embeddings"
        elif owner.startswith("model.layers.") and len(parts) > 4:
            key = ".".join(parts[:4])           # model.layers.N.self_attn / model.layers.N.mlp
        else:
            key = owner[: -len(".weight")] if owner.endswith(".weight") else owner
        groups.setdefault(key, []).append(name)

    def order(key: str):
        if key == "embeddings":
            return (0, 0, 0, key)
        if key.startswith("model.layers."):
            return (1, int(key.split(".")[2]), 0 if key.endswith("self_attn") else 1, key)
        return (2, 0, 0, key)

    return [Unit(k, tuple(sorted(groups[k]))) for k in sorted(groups, key=order)]


def scheme_bytes(shape: tuple[int, int], scheme: WeightScheme | None) -> int:
    """Stored bytes of one tensor: float32, or packed integers + float32 scales (+ zero points)."""
    rows, cols = shape
    if scheme is None:
        return 4 * rows * cols
    groups = rows * (1 if scheme.group_size is None else cols // scheme.group_size)
    return rows * cols * scheme.bits // 8 + 4 * groups + (0 if scheme.symmetric else groups)


@torch.no_grad()
def logits_on(model: nn.Module, windows: torch.Tensor) -> torch.Tensor:
    return torch.cat([model(windows[i:i + 1]).to(torch.float32) for i in range(windows.shape[0])])


def compare(ref_logits: torch.Tensor, test_logits: torch.Tensor, windows: torch.Tensor) -> dict:
    """{kl, ppl, ppl_ref, ppl_increase_pct} over next-token positions of ``windows``."""
    from slmpack.runtime.metrics import compare_logits

    v = ref_logits.shape[-1]
    c = compare_logits(ref_logits[:, :-1].to(torch.float64).reshape(-1, v).numpy(),
                       test_logits[:, :-1].to(torch.float64).reshape(-1, v).numpy(),
                       windows[:, 1:].reshape(-1).to(torch.long).numpy())
    return {"kl": c["mean_kl"], "ppl": c["perplexity_artifact"], "ppl_ref": c["perplexity_reference"],
            "ppl_increase_pct": c["perplexity_delta_pct"]}


@contextmanager
def fake_quantized(model: nn.Module, assignment: Mapping[str, WeightScheme | None]):
    """Within the block, each named weight holds its RTN fake-quant value (None: unchanged)."""
    params = dict(model.named_parameters(remove_duplicate=False))
    saved, seen = {}, set()
    try:
        with torch.no_grad():
            for name, scheme in assignment.items():
                p = params[name]
                if scheme is None or id(p) in seen:
                    continue
                seen.add(id(p))
                saved[name] = p.detach().clone()
                p.copy_(fake_quantize(p, scheme.bits, scheme.group_size, scheme.symmetric).to(p.dtype))
        yield model
    finally:
        with torch.no_grad():
            for name, value in saved.items():
                params[name].copy_(value)


def measure(model: nn.Module, windows: torch.Tensor, ref_logits: torch.Tensor,
            assignment: Mapping[str, WeightScheme | None]) -> dict:
    with fake_quantized(model, assignment):
        return compare(ref_logits, logits_on(model, windows), windows)


def unit_sensitivity(model: nn.Module, windows: torch.Tensor, ref_logits: torch.Tensor, unit: Unit,
                     schemes: Mapping[str, WeightScheme | None]) -> dict:
    """Damage when only ``unit``'s tensors take ``schemes`` (per tensor); zero when all float."""
    assignment = {t: schemes.get(t) for t in unit.tensors}
    if all(s is None for s in assignment.values()):
        return {"kl": 0.0, "ppl_increase_pct": 0.0}
    m = measure(model, windows, ref_logits, assignment)
    return {"kl": m["kl"], "ppl_increase_pct": m["ppl_increase_pct"]}
