"""Feed calibration windows through the model and hand linear-layer inputs to a callback.

The model contract is ``model(input_ids[1, T]) -> logits[1, T, V]``; nothing else about its
calling convention is assumed. Inputs are read with forward pre-hooks. When ``stop_after`` is
given, the forward pass is abandoned (by raising a private exception from a hook) as soon as every
listed module has received its input, so capturing early layers does not pay for the whole model.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

Progress = Callable[[str, int, int], None]


class _StopForward(Exception):
    pass


@torch.no_grad()
def capture_inputs(model: nn.Module, windows: torch.Tensor, modules: dict[str, nn.Module],
                   on_input: Callable[[str, torch.Tensor], None], *,
                   stop_after: Iterable[str] | None = None, stage: str = "capture",
                   progress: Progress | None = None) -> None:
    """Run every row of ``windows`` [N, T] through ``model`` (batch 1) calling
    ``on_input(name, x)`` with the input of each module in ``modules``."""
    stop = None if stop_after is None else frozenset(stop_after)
    seen: set[str] = set()

    def make_hook(name: str):
        def hook(_module, args):
            on_input(name, args[0].detach())
            seen.add(name)
            if stop is not None and stop <= seen:
                raise _StopForward
        return hook

    handles = [mod.register_forward_pre_hook(make_hook(name)) for name, mod in modules.items()]
    try:
        n = windows.shape[0]
        for i in range(n):
            seen.clear()
            try:
                model(windows[i:i + 1])
            except _StopForward:
                pass
            if progress is not None:
                progress(stage, i + 1, n)
    finally:
        for h in handles:
            h.remove()
