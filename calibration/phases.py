"""The phases of :func:`slmpack.calibration.build_plan.build_plan`, each on a :class:`Work`.

A Work wraps the model: it snapshots every parameter before the first change (``touch``) and
puts them back in ``restore``; phases modify the model in place in between.
"""
from __future__ import annotations

import torch
from torch import nn

from .awq import AWQConfig, awq_fold_group, subsample_rows
from .capture import capture_inputs
from .gptq import GPTQConfig, HessianAccumulator, gptq_quantize
from .layout import FoldRecord, InputGroup
from .observers import make_observer
from .plan import ActivationQParams
from .rtn import QuantizedWeight, quantize_rtn
from .schemes import ActivationMode, Algorithm
from .smoothquant import ChannelAbsMax, smooth_group


def mod_name(tensor_name: str) -> str:
    return tensor_name[:-len(".weight")]


class Work:
    """Model surgery with snapshots so the caller's model is restored afterwards."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.modules = dict(model.named_modules(remove_duplicate=False))
        self.params = dict(model.named_parameters(remove_duplicate=False))
        self.saved: dict[str, torch.Tensor] = {}
        self._ids: set[int] = set()

    def touch(self, module: str) -> None:
        """Snapshot ``module``'s weight and bias (once per storage: tied tensors are one)."""
        for pname in ("weight", "bias"):
            param = self.params.get(f"{module}.{pname}")
            if param is not None and id(param) not in self._ids:
                self._ids.add(id(param))
                self.saved[f"{module}.{pname}"] = param.detach().clone()

    def restore(self) -> None:
        with torch.no_grad():
            for full, value in self.saved.items():
                self.params[full].copy_(value)


def fold_overrides(work: Work, dec) -> dict[str, torch.Tensor]:
    """Float tensors changed by folds (not quantized weights, whose numbers the plan holds)."""
    out = {}
    for full, before in sorted(work.saved.items()):
        d = dec.get(full)
        now = work.params[full].detach()
        if (d is None or d.weight is None) and not torch.equal(now, before):
            out[full] = now.to(torch.float32).clone()
    return out


def smoothquant_phase(work, groups, dec, windows, progress) -> list[FoldRecord]:
    todo = [g for g in groups
            if dec[f"{g.members[0]}.weight"].activation.smoothquant_alpha is not None]
    if not todo:
        return []
    stats = {g.members[0]: ChannelAbsMax(dec[f"{g.members[0]}.weight"].shape[1]) for g in todo}
    capture_inputs(work.model, windows, {m: work.modules[m] for m in stats},
                   lambda name, x: stats[name].observe(x), stage="smoothquant", progress=progress)
    folds = []
    for g in todo:
        for m in (*g.members, g.prev):
            work.touch(m)
        alpha = dec[f"{g.members[0]}.weight"].activation.smoothquant_alpha
        folds.append(smooth_group(work.modules, g, stats[g.members[0]].value, alpha))
    return folds


def _is_awq(group: InputGroup, dec) -> bool:
    ws = [dec[f"{m}.weight"].weight for m in group.members]
    return group.prev is not None and all(w is not None and w.algorithm is Algorithm.AWQ
                                          for w in ws)


def awq_phase(work, groups, dec, windows, config: AWQConfig, progress) -> list[FoldRecord]:
    by_layer: dict[int, list[InputGroup]] = {}
    for g in groups:
        if _is_awq(g, dec):
            by_layer.setdefault(-1 if g.layer is None else g.layer, []).append(g)
    folds = []
    n_rows = windows.shape[0] * windows.shape[1]
    stride = max(1, -(-n_rows // config.max_rows))
    for layer in sorted(by_layer, key=lambda k: (k < 0, k)):
        layer_groups = by_layer[layer]
        first = {g.members[0]: g for g in layer_groups}
        rows: dict[str, list[torch.Tensor]] = {m: [] for m in first}

        def keep(name, x, rows=rows):
            rows[name].append(x.reshape(-1, x.shape[-1])[::stride].to(torch.float32))

        capture_inputs(work.model, windows, {m: work.modules[m] for m in first}, keep,
                       stop_after=first, stage=f"awq layer {layer}", progress=progress)
        for m, g in first.items():
            for mm in (*g.members, g.prev):
                work.touch(mm)
            schemes = [dec[f"{x}.weight"].weight for x in g.members]
            x = subsample_rows(torch.cat(rows[m]), config.max_rows)
            folds.append(awq_fold_group(work.modules, g, x, schemes, config))
    return folds


def _store(work: Work, module: str, qw: QuantizedWeight) -> None:
    work.touch(module)
    w = work.modules[module].weight
    w.copy_(qw.dequantize().to(w.dtype))


def weight_phase(work, groups, dec, windows, config: GPTQConfig, progress
                  ) -> dict[str, QuantizedWeight]:
    out: dict[str, QuantizedWeight] = {}
    ordered = [(mod_name(n),) for n, d in dec.items() if d.kind == "embedding"]
    ordered += [g.members for g in groups]
    for i, members in enumerate(ordered):
        todo = [m for m in members
                if dec[f"{m}.weight"].weight is not None and not dec[f"{m}.weight"].tied_to]
        gptq_members = [m for m in todo
                        if dec[f"{m}.weight"].weight.algorithm is Algorithm.GPTQ]
        hessian = None
        if gptq_members:
            acc = HessianAccumulator(dec[f"{gptq_members[0]}.weight"].shape[1])
            capture_inputs(work.model, windows, {gptq_members[0]: work.modules[gptq_members[0]]},
                           lambda _n, x: acc.add(x), stop_after=[gptq_members[0]],
                           stage=f"gptq {gptq_members[0]}", progress=progress)
            hessian = acc.hessian()
        for m in todo:
            s = dec[f"{m}.weight"].weight
            w = work.modules[m].weight.detach()
            if s.algorithm is Algorithm.GPTQ:
                qw = gptq_quantize(w, hessian, bits=s.bits, group_size=s.group_size,
                                   symmetric=s.symmetric, config=config)
            else:
                qw = quantize_rtn(w, s.bits, s.group_size, s.symmetric)
            out[f"{m}.weight"] = qw
            _store(work, m, qw)
        if progress is not None:
            progress("quantize weights", i + 1, len(ordered))
    return out


def activation_phase(work, dec, windows, progress) -> dict[str, ActivationQParams]:
    static = {mod_name(n): d for n, d in dec.items()
              if d.activation.mode is ActivationMode.STATIC_INT8}
    if not static:
        return {}
    observers = {m: make_observer(d.activation) for m, d in static.items()}
    capture_inputs(work.model, windows, {m: work.modules[m] for m in static},
                   lambda name, x: observers[name].observe(x), stage="activation ranges",
                   progress=progress)
    acts = {}
    for m, obs in observers.items():
        scale, zp = obs.qparams()
        acts[f"{m}.weight"] = ActivationQParams(
            scale=float(torch.tensor(scale, dtype=torch.float32)), zero_point=zp)
    return acts
