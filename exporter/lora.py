"""LoRA adapters (PEFT layout: ``adapter_config.json`` + ``adapter_model.safetensors``), merged
into the base checkpoint's weights before calibration and tracing.

Read under the same rules as a model directory (slmpack/confine.py: regular files inside the
adapter directory, safetensors only, finite values). Supported: ``peft_type`` LORA on any linear
weight of the checkpoint (q/k/v/o, gate/up/down, fused qkv, ...), any rank (per-module ranks from
the tensors' shapes, so ``rank_pattern`` needs nothing more), ``lora_alpha``, rsLoRA
(``alpha / sqrt(r)``) and ``fan_in_fan_out`` (GPT-2's Conv1D weights). Refused with
``E_ADAPTER_UNSUPPORTED``: DoRA, other PEFT types, LoRA biases, ``alpha_pattern``,
``modules_to_save``, trainable tokens, layer replication, embedding / lm_head adapters.

The merge is PEFT's ``merge_and_unload``: ``W += scale * (B @ A)`` (transposed when
``fan_in_fan_out``), the product computed in float32 and added in the weight's dtype. In separate
mode (``--adapter-mode separate``) the base stays unmerged and ``branches`` adds the LoRA path to
the traced graph, for targets whose runtime swaps adapters (ONNX: onnxruntime adapters).
"""
from __future__ import annotations

import contextlib
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from slmpack import confine
from slmpack.confine import ModelRoot
from slmpack.errors import BadInputError
from slmpack.exporter.safetensors_reader import load_tensors

CONFIG_FILE, WEIGHTS_FILE = "adapter_config.json", "adapter_model.safetensors"
VECTORS_FILE = "test_vectors_adapter.safetensors"   # separate mode: the reference with the adapter active
PREFIX = "base_model.model."
# config keys whose non-empty / true value changes the function; refused
REFUSED = {"use_dora": "DoRA", "alpha_pattern": "alpha_pattern", "modules_to_save": "modules_to_save",
           "lora_bias": "LoRA biases", "trainable_token_indices": "trainable tokens",
           "layer_replication": "layer replication", "target_parameters": "target_parameters (MoE experts)",
           "use_qalora": "QALoRA"}


def _unsupported(msg: str) -> BadInputError:
    return BadInputError(msg, "E_ADAPTER_UNSUPPORTED")


def _invalid(msg: str) -> BadInputError:
    return BadInputError(msg, "E_ADAPTER_INVALID")


@dataclass(frozen=True)
class LoraPair:
    weight: str            # the base checkpoint tensor it changes, e.g. model.layers.0.self_attn.q_proj.weight
    a: torch.Tensor        # [r, in]
    b: torch.Tensor        # [out, r]
    scale: float


@dataclass(frozen=True)
class LoraAdapter:
    path: Path
    pairs: tuple[LoraPair, ...]
    fan_in_fan_out: bool
    rslora: bool
    sha256: str            # adapter_config.json + adapter_model.safetensors

    def summary(self) -> dict:
        ranks = sorted({p.a.shape[0] for p in self.pairs})
        return {"sha256": self.sha256, "tensors": len(self.pairs), "ranks": ranks, "rslora": self.rslora}


def _config(root: ModelRoot) -> Mapping:
    cfg = confine.read_json(root, CONFIG_FILE, "E_ADAPTER_INVALID")
    if not isinstance(cfg, dict):
        raise _invalid(f"{root.path / CONFIG_FILE}: expected a JSON object")
    if cfg.get("peft_type", "LORA") != "LORA":
        raise _unsupported(f"adapter type {cfg.get('peft_type')!r}: only LoRA adapters are supported")
    for key, what in REFUSED.items():
        if cfg.get(key):
            raise _unsupported(f"{what} ({key} in {CONFIG_FILE}) is not supported; merge it with PEFT first")
    if cfg.get("bias", "none") != "none":
        raise _unsupported(f"bias={cfg['bias']!r}: LoRA adapters that train biases are not supported")
    alpha = cfg.get("lora_alpha", 8)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha):
        raise _invalid(f"lora_alpha must be a finite number, got {alpha!r}")
    for key in ("use_rslora", "fan_in_fan_out"):
        if not isinstance(cfg.get(key, False), bool):
            raise _invalid(f"{key} must be true or false, got {cfg[key]!r}")
    return cfg


def _digest(root: ModelRoot) -> str:
    h = hashlib.sha256()
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        h.update(name.encode() + b"\0" + confine.read_bytes(root, name) + b"\0")
    return h.hexdigest()


def read_adapter(adapter_dir: Path, follow_symlinks: bool = False) -> LoraAdapter:
    """Parse and check an adapter directory (no base weights needed; see ``check_against``)."""
    adapter_dir = Path(adapter_dir)
    if not adapter_dir.is_dir():
        raise BadInputError(f"--adapter {adapter_dir}: not a directory", "E_ADAPTER_MISSING")
    root = ModelRoot(adapter_dir, follow_symlinks)
    if not (adapter_dir / WEIGHTS_FILE).exists():
        found = "adapter_model.bin (pickle; refused)" if (adapter_dir / "adapter_model.bin").exists() else "none"
        raise BadInputError(f"{adapter_dir}: no {WEIGHTS_FILE} (found: {found})", "E_ADAPTER_MISSING")
    cfg = _config(root)
    with confine.open_inside(root, WEIGHTS_FILE) as f:
        tensors = load_tensors(f, WEIGHTS_FILE)
    alpha, rslora = float(cfg.get("lora_alpha", 8)), bool(cfg.get("use_rslora", False))
    modules: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in tensors.items():
        if not key.startswith(PREFIX):
            raise _invalid(f"{WEIGHTS_FILE}: tensor {key!r} is not under {PREFIX!r} (not a PEFT LoRA file)")
        name = key[len(PREFIX):]
        for part in ("lora_A", "lora_B"):
            if name.endswith(f".{part}.weight"):
                modules.setdefault(name[: -len(f".{part}.weight")], {})[part] = t
                break
        else:
            what = "embedding adapters" if "lora_embedding" in name else f"tensor {name!r}"
            raise _unsupported(f"{WEIGHTS_FILE}: {what} not supported (only lora_A / lora_B of linear layers)")
    if not modules:
        raise _invalid(f"{WEIGHTS_FILE}: no LoRA tensors")
    pairs = []
    for module, ab in sorted(modules.items()):
        if set(ab) != {"lora_A", "lora_B"}:
            raise _invalid(f"{WEIGHTS_FILE}: {module} has {sorted(ab)} but needs lora_A and lora_B")
        a, b = ab["lora_A"], ab["lora_B"]
        if not (a.is_floating_point() and b.is_floating_point()):
            raise _invalid(f"{WEIGHTS_FILE}: {module}: LoRA tensors must be floating point")
        if a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[1] or a.shape[0] < 1:
            raise _invalid(f"{WEIGHTS_FILE}: {module}: lora_A {tuple(a.shape)} and lora_B {tuple(b.shape)} "
                           "are not [r, in] and [out, r]")
        if module.split(".")[-1] in ("lm_head", "embed_tokens", "wte", "wpe"):
            raise _unsupported(f"LoRA on {module} is not supported (embeddings / lm_head)")
        r = a.shape[0]
        pairs.append(LoraPair(f"{module}.weight", a, b, alpha / math.sqrt(r) if rslora else alpha / r))
    return LoraAdapter(adapter_dir, tuple(pairs), bool(cfg.get("fan_in_fan_out", False)), rslora, _digest(root))


def delta(pair: LoraPair, fan_in_fan_out: bool) -> torch.Tensor:
    d = (pair.b.float() @ pair.a.float()) * pair.scale
    return d.T if fan_in_fan_out else d


def check_against(adapter: LoraAdapter, shapes: Mapping[str, tuple[int, ...]]) -> None:
    """Every adapted weight exists in the base checkpoint with the shape the LoRA pair implies."""
    for p in adapter.pairs:
        want = (p.b.shape[0], p.a.shape[1])
        want = want[::-1] if adapter.fan_in_fan_out else want
        if p.weight not in shapes:
            raise BadInputError(f"adapter changes {p.weight}, which the base checkpoint does not have "
                                "(an adapter for another model?)", "E_ADAPTER_MISMATCH")
        if tuple(shapes[p.weight]) != want:
            raise BadInputError(f"adapter for {p.weight} implies shape {want}, the base has "
                                f"{tuple(shapes[p.weight])}", "E_ADAPTER_MISMATCH")


def merge(state_dict: dict[str, torch.Tensor], adapter: LoraAdapter) -> dict[str, torch.Tensor]:
    """PEFT's merge_and_unload on a state dict (a new dict; the base tensors are not modified)."""
    check_against(adapter, {k: tuple(v.shape) for k, v in state_dict.items()})
    out = dict(state_dict)
    for p in adapter.pairs:
        w = out[p.weight]
        out[p.weight] = w + delta(p, adapter.fan_in_fan_out).to(w.dtype)
    return out


# ---- separate mode: the adapter stays out of the base weights ------------------------------------
class LoraLinear(nn.Module):
    """``base(x) + (x @ lora_A) @ lora_B``: ``lora_A`` [in, r] = A^T, ``lora_B`` [r, out] = scale * B^T,
    buffers whose names the traced graph keeps (``...q_proj.lora_A``), so a target can expose them
    as swappable inputs (onnxruntime adapters)."""

    def __init__(self, base: nn.Linear, pair: LoraPair):
        super().__init__()
        self.base = base
        self.register_buffer("lora_A", pair.a.float().T.contiguous(), persistent=False)
        self.register_buffer("lora_B", (pair.b.float() * pair.scale).T.contiguous(), persistent=False)

    def forward(self, x):
        return self.base(x) + (x @ self.lora_A) @ self.lora_B


def _module_of(ref: nn.Module, pair: LoraPair) -> tuple[nn.Module, str] | None:
    """(parent module, attribute) of the reference's nn.Linear a pair adapts, when the checkpoint
    name is the reference's own (no fused or re-laid-out tensor in between)."""
    path = pair.weight[: -len(".weight")].split(".")
    try:
        parent = ref.get_submodule(".".join(path[:-1]))
    except AttributeError:
        return None
    mod = getattr(parent, path[-1], None)
    return (parent, path[-1]) if isinstance(mod, nn.Linear) else None


def inseparable(ref: nn.Module, adapter: LoraAdapter) -> list[str]:
    """Why this adapter cannot stay separate from ``ref`` (empty: it can)."""
    if adapter.fan_in_fan_out:
        return ["fan_in_fan_out (Conv1D) weights are re-laid-out at load; use --adapter-mode merged"]
    return [f"{p.weight} is not one of the reference's linear layers (a fused or re-laid-out tensor); "
            "use --adapter-mode merged" for p in adapter.pairs if _module_of(ref, p) is None]


@contextlib.contextmanager
def branches(ref: nn.Module, adapter: LoraAdapter):
    """Install a LoraLinear on every adapted linear of ``ref`` for the duration (traced graphs
    keep their buffers; the module is restored afterwards)."""
    installed = []
    try:
        for p in adapter.pairs:
            parent, name = _module_of(ref, p)
            base = getattr(parent, name)
            setattr(parent, name, LoraLinear(base, p))
            installed.append((parent, name, base))
        yield ref
    finally:
        for parent, name, base in reversed(installed):
            setattr(parent, name, base)
