"""Attention block with a concat KV cache -> com.microsoft GroupQueryAttention (ORT GenAI layout).

pattern   (after fuse_rotary_embedding)
            q = RotaryEmbedding(Transpose(Reshape(q_proj)))     k = RotaryEmbedding(Transpose(Reshape(k_proj)))
            v = Transpose(Reshape(v_proj))
            present_k = Concat(past_k, k, axis=2)                present_v = Concat(past_v, v, axis=2)
            [GQA head sharing: Reshape(Expand(Unsqueeze(present_*)))]
            out = Reshape(Transpose(MatMul(Softmax(Add(Mul(MatMul(q, Transpose(k_rep)), scale), mask)), v_rep)))
check     q/k/v projections are [batch, sequence, heads*head_dim]; heads of q a multiple of those of
          k/v; one rotary embedding (positions, tables) for q and k, full and non-interleaved; a
          constant scale; and the mask is exactly "causal by position_ids AND attention_mask":
          Where(And(LessOrEqual(Range(0, total), position_ids[0]), Cast(attention_mask)), 0, -inf)
rewrite   RotaryEmbedding on the 3-D projections, then
          out, present_k, present_v = GroupQueryAttention(q, k, v, past_k, past_v, seqlens_k,
                                                          total_sequence_length, num_heads, kv_num_heads, scale)
          with seqlens_k = ReduceSum(attention_mask) - 1 and total_sequence_length = len(attention_mask)
          (int32), as onnxruntime-genai's own builder feeds GQA. Past and present stay separate
          buffers (genai_config past_present_share_buffer = false).

The GQA kernel is causal on its own and masks by lengths: this equals our mask when positions run
on from the cache length and attention_mask is a prefix of ones, which is how onnxruntime-genai and
our runner call the model; check() refuses any other mask structure (e.g. sliding windows).
"""
from __future__ import annotations

import onnx_ir as ir

from slmpack.targets.onnx.fusions._base import (MS_DOMAIN, OrtFusion, attr_int, dims, graph_input, ints,
                                                is_value, producer, scalar, through)

ATTENTION_MASK, POSITION_IDS = "attention_mask", "position_ids"
_BNSH = [0, 2, 1, 3]


def causal_key_mask(mask: ir.Value) -> ir.Value | None:
    """The attention_mask graph input if ``mask`` is Where(causal AND key mask, 0, -inf), else None."""
    where = producer(mask, "Where")
    if where is None or not is_value(scalar(where.inputs[1]), 0.0) or not is_value(scalar(where.inputs[2]), float("-inf")):
        return None
    both = producer(where.inputs[0], "And")
    if both is None:
        return None
    attn, causal = None, None
    for a in both.inputs:
        src = through(a, "Unsqueeze", "Cast")
        if graph_input(src, ATTENTION_MASK):
            attn = src
        le = producer(through(a, "Unsqueeze"), "LessOrEqual")
        if le is not None:
            rng = producer(through(le.inputs[0], "Unsqueeze"), "Range")
            sel = producer(through(le.inputs[1], "Unsqueeze"), "Gather")
            if (rng is not None and ints(rng.inputs[0]) == [0] and ints(rng.inputs[2]) == [1] and sel is not None
                    and graph_input(sel.inputs[0], POSITION_IDS) and ints(sel.inputs[1]) == [0]):
                causal = le
    return attn if (attn is not None and causal is not None) else None


class FuseGroupQueryAttention(OrtFusion):
    def __init__(self, repeat_kv: bool):
        super().__init__(f"FuseGroupQueryAttention{'GQA' if repeat_kv else 'MHA'}")
        self.repeat_kv = repeat_kv

    def _heads(self, op, proj, shape):
        return op.Transpose(op.Reshape(proj, shape, _allow_other_attributes=True), perm=_BNSH)

    def _repeat(self, op, t, axes, expand_shape, shape):
        if not self.repeat_kv:
            return t
        return op.Reshape(op.Expand(op.Unsqueeze(t, axes), expand_shape), shape, _allow_other_attributes=True)

    def pattern(self, op, q_proj, k_proj, v_proj, q_shape, k_shape, v_shape, pos, cos, sin, past_k, past_v,
                k_axes, k_expand, k_rshape, v_axes, v_expand, v_rshape, scale, mask, out_shape):
        rope = dict(_domain=MS_DOMAIN, _allow_other_attributes=True)
        q = op.RotaryEmbedding(self._heads(op, q_proj, q_shape), pos, cos, sin, _outputs=["q_rot"], **rope)
        k = op.RotaryEmbedding(self._heads(op, k_proj, k_shape), pos, cos, sin, _outputs=["k_rot"], **rope)
        v = self._heads(op, v_proj, v_shape)
        present_k = op.Concat(past_k, k, axis=2)
        present_v = op.Concat(past_v, v, axis=2)
        k_rep = self._repeat(op, present_k, k_axes, k_expand, k_rshape)
        v_rep = self._repeat(op, present_v, v_axes, v_expand, v_rshape)
        scores = op.Add(op.Mul(op.MatMul(q, op.Transpose(k_rep, perm=[0, 1, 3, 2])), scale), mask)
        out = op.MatMul(op.Softmax(scores, axis=-1), v_rep)
        out = op.Reshape(op.Transpose(out, perm=_BNSH), out_shape, _allow_other_attributes=True)
        return out, present_k, present_v

    def check(self, context, q_proj, k_proj, v_proj, q_rot, k_rot, past_k, scale, mask, **_):
        q4, k4 = dims(q_rot), dims(k_rot)
        if q4 is None or k4 is None or len(q4) != 4 or len(k4) != 4:
            return self.decline(q_proj, "query/key head layouts have unknown rank")
        h, kv, hd = q4[1], k4[1], q4[3]
        if not all(isinstance(d, int) for d in (h, kv, hd)) or h % kv:
            return self.decline(q_proj, f"heads {h} / kv heads {kv} unknown or not a multiple")
        if (h != kv) != self.repeat_kv:
            return self.decline(q_proj, "head repetition does not match the head counts")
        for proj, n in ((q_proj, h), (k_proj, kv), (v_proj, kv)):
            s = dims(proj)
            if s is None or len(s) != 3 or s[2] != n * hd:
                return self.decline(q_proj, f"projection {proj.name} shape {s} is not [batch, sequence, {n}*{hd}]")
        for rot in (q_rot, k_rot):
            node = rot.producer()
            if attr_int(node, "interleaved", 0) or attr_int(node, "rotary_embedding_dim", 0) not in (0, hd):
                return self.decline(q_proj, "interleaved or partial rotary embedding")
        if scalar(scale) is None:
            return self.decline(q_proj, "attention scale is not a constant")
        if causal_key_mask(mask) is None:
            return self.decline(q_proj, "mask is not exactly causal-by-position_ids AND attention_mask")
        if q_proj.dtype not in (ir.DataType.FLOAT, ir.DataType.FLOAT16):
            return self.decline(q_proj, f"dtype {q_proj.dtype} not supported by the ORT CPU kernel")
        return True

    def rewrite(self, op, q_proj, k_proj, v_proj, q_rot, k_rot, pos, cos, sin, past_k, past_v, scale, mask, **_):
        h, kv = dims(q_rot)[1], dims(k_rot)[1]
        attention_mask = causal_key_mask(mask)
        rope = dict(interleaved=0, _domain=MS_DOMAIN)
        q = op.RotaryEmbedding(q_proj, pos, cos, sin, num_heads=h, **rope)
        k = op.RotaryEmbedding(k_proj, pos, cos, sin, num_heads=kv, **rope)
        # lengths as onnxruntime-genai's builder computes them (shared by every layer after CSE)
        total = op.Cast(op.Gather(op.Shape(attention_mask), op.Constant(value_int=1), axis=0), to=ir.DataType.INT32)
        summed = op.ReduceSum(attention_mask, op.Constant(value_ints=[1]), keepdims=0)
        seqlens_k = op.Cast(op.Sub(summed, op.Constant(value_int=1)), to=ir.DataType.INT32)
        out, present_k, present_v = op.GroupQueryAttention(
            q, k, v_proj, past_k, past_v, seqlens_k, total, num_heads=h, kv_num_heads=kv, scale=scalar(scale),
            _domain=MS_DOMAIN, _outputs=3)
        return out, present_k, present_v


def rules() -> list[FuseGroupQueryAttention]:
    return [FuseGroupQueryAttention(repeat_kv=True), FuseGroupQueryAttention(repeat_kv=False)]
