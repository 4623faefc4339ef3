"""The module ExecuTorch exports: ``forward(tokens [1,S] int64, input_pos [S] int64) -> logits [1,S,V]``
with the KV cache in mutable buffers, on a private copy of the reference module (so casting,
quantizing and module swaps never touch the module the pipeline uses for test vectors).

* ``Sdpa.DECOMPOSED``: the spine's ``BufferProgram`` (``index_copy_`` into ``[1, kv, T, hd]``
  buffers, attention written out as matmul/softmax over the whole cache with a mask).
* ``Sdpa.CUSTOM``: ExecuTorch's ``llama::update_cache`` + ``llama::custom_sdpa`` on
  ``[1, T, kv, hd]`` buffers (see ``source_transforms/custom_sdpa.py``).
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from slmpack.exporter.programs import BufferProgram
from slmpack.exporter.reference import ReferenceModel
from slmpack.targets.executorch.options import ExecuTorchOptions, Sdpa
from slmpack.targets.executorch.source_transforms.custom_sdpa import CustomOpCache, can_express, replace_attention
from slmpack.targets.executorch.source_transforms.rms_norm_linear_mean import replace_rms_norm


class CustomOpProgram(nn.Module):
    def __init__(self, ref: ReferenceModel, max_context: int, cache_dtype: torch.dtype):
        super().__init__()
        self.ref, self.max_context = ref, max_context
        spec = ref.spec
        shape = (1, max_context, spec.num_kv_heads, spec.head_dim)
        for i in range(spec.num_layers):
            self.register_buffer(f"k_cache_{i}", torch.zeros(shape, dtype=cache_dtype), persistent=False)
            self.register_buffer(f"v_cache_{i}", torch.zeros(shape, dtype=cache_dtype), persistent=False)

    def caches(self):
        n = self.ref.spec.num_layers
        return ([getattr(self, f"k_cache_{i}") for i in range(n)],
                [getattr(self, f"v_cache_{i}") for i in range(n)])

    def forward(self, tokens, input_pos):
        start = input_pos[0].item()
        torch._check_is_size(start)
        torch._check(start + tokens.shape[1] <= self.max_context)
        ks, vs = self.caches()
        return self.ref.step(tokens, input_pos, CustomOpCache(ks, vs, start))


def cache_dtype(options: ExecuTorchOptions) -> torch.dtype:
    """custom_sdpa computes in fp32 (or bf16); an fp16 model keeps an fp32 cache for it."""
    dtype = options.precision.torch_dtype
    if options.sdpa is Sdpa.CUSTOM and dtype == torch.float16:
        return torch.float32
    return dtype


def build_program(ref: ReferenceModel, max_context: int, options: ExecuTorchOptions, plan=None) -> tuple[nn.Module, dict]:
    """Copy, cast, quantize and swap modules; return the module to export and swap counts."""
    ref = copy.deepcopy(ref)
    if options.precision.torch_dtype != torch.float32:
        ref = ref.to(options.precision.torch_dtype)
    counts = {"rms_norm_linear_mean": replace_rms_norm(ref)}
    if plan is not None:
        from slmpack.targets.executorch.quantize import apply_plan

        counts["quantized_linears"] = apply_plan(ref, plan, options)
    declined = can_express(ref.spec) if options.sdpa is Sdpa.CUSTOM else None
    if declined is not None:  # the written-out attention instead: counted, never a wrong kernel
        counts["custom_sdpa"] = 0
        counts["custom_sdpa_declined"] = declined
    if options.sdpa is Sdpa.CUSTOM and declined is None:
        windowed = any(w is not None and w < max_context for w in ref.spec.windows)
        counts["custom_sdpa"] = replace_attention(ref, use_mask=windowed)
        module = CustomOpProgram(ref, max_context, cache_dtype(options))
    else:
        module = BufferProgram(ref, max_context, dtype=cache_dtype(options))
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval(), counts
