"""The fused ops the FX passes create, registered with torch.library under ``slmpack::``.

Each op's only kernel is registered for ``CompositeImplicitAutograd``: its implementation *is*
its decomposition, written with the same aten ops, in the same order, as the reference module
(``exporter/reference.py``). So

* eager execution of a fused ExportedProgram (``ep.module()``) gives the reference's numbers;
* a target that does not know an op needs nothing: ``ep.run_decompositions()`` (which
  torch.onnx, ExecuTorch's ``to_edge`` and coremltools all call) expands it back to aten;
* a target that does know it keeps it: torch.onnx's ``custom_translation_table``, ExecuTorch's
  ``preserve_ops`` / partitioners, coremltools' ``register_torch_op``.

Ops:
  slmpack::rms_norm(x, weight, eps)                          RMSNorm (fp32 math, cast back, scale)
  slmpack::rope(x, cos, sin)                                 x*cos + rotate_half(x)*sin
  slmpack::attention(q, k, v, k_cache, v_cache, mask, input_pos?, scale) -> (out, k_all, v_all)
        cache update + grouped-query attention; input_pos None: append (concat, ONNX GenAI
        layout); else write at input_pos out of place (static I/O caches)
  slmpack::attention_inplace(q, k, v, k_cache!, v_cache!, mask, input_pos, scale) -> out
        the same with the caches updated in place (mutable buffers: ExecuTorch, Core ML state)
"""
from __future__ import annotations

import torch

NAMESPACE = "slmpack"

_lib = torch.library.Library(NAMESPACE, "DEF")
_lib.define("rms_norm(Tensor x, Tensor weight, float eps) -> Tensor")
_lib.define("rope(Tensor x, Tensor cos, Tensor sin) -> Tensor")
_lib.define("attention(Tensor q, Tensor k, Tensor v, Tensor k_cache, Tensor v_cache, Tensor mask, "
            "Tensor? input_pos, float scale) -> (Tensor, Tensor, Tensor)")
_lib.define("attention_inplace(Tensor q, Tensor k, Tensor v, Tensor(a!) k_cache, Tensor(b!) v_cache, "
            "Tensor mask, Tensor input_pos, float scale) -> Tensor")


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    dtype = x.dtype
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(dtype)


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def _grouped_attention(q, k_all, v_all, mask, scale: float) -> torch.Tensor:
    bsz, h, _, hd = q.shape
    kv = k_all.shape[1]
    groups = h // kv
    if groups > 1:
        t = k_all.shape[2]
        k_all = k_all[:, :, None].expand(bsz, kv, groups, t, hd).reshape(bsz, h, t, hd)
        v_all = v_all[:, :, None].expand(bsz, kv, groups, t, hd).reshape(bsz, h, t, hd)
    scores = torch.matmul(q, k_all.transpose(2, 3)) * scale + mask
    probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
    return torch.matmul(probs, v_all)


def attention(q, k, v, k_cache, v_cache, mask, input_pos, scale: float):
    if input_pos is None:
        k_all = torch.cat([k_cache, k], dim=2)
        v_all = torch.cat([v_cache, v], dim=2)
    else:
        k_all = k_cache.index_copy(2, input_pos, k)
        v_all = v_cache.index_copy(2, input_pos, v)
    return _grouped_attention(q, k_all, v_all, mask, scale), k_all, v_all


def attention_inplace(q, k, v, k_cache, v_cache, mask, input_pos, scale: float):
    k_cache.index_copy_(2, input_pos, k)
    v_cache.index_copy_(2, input_pos, v)
    return _grouped_attention(q, k_cache, v_cache, mask, scale)


for _name, _fn in (("rms_norm", rms_norm), ("rope", rope), ("attention", attention),
                   ("attention_inplace", attention_inplace)):
    _lib.impl(_name, _fn, "CompositeImplicitAutograd")

RMS_NORM = torch.ops.slmpack.rms_norm.default
ROPE = torch.ops.slmpack.rope.default
ATTENTION = torch.ops.slmpack.attention.default
ATTENTION_INPLACE = torch.ops.slmpack.attention_inplace.default
ALL = (RMS_NORM, ROPE, ATTENTION, ATTENTION_INPLACE)


def count(graph_module, *ops) -> int:
    """How many nodes of ``graph_module`` call one of ``ops`` (default: any slmpack op)."""
    ops = ops or ALL
    return sum(1 for n in graph_module.graph.nodes if n.op == "call_function" and n.target in ops)
