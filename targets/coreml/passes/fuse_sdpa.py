"""Fuse the written-out attention into Core ML's ``scaled_dot_product_attention`` (iOS 18 / macOS 15).

``reference.Attention`` computes ``softmax(q @ k^T * scale + mask) @ v``; coremltools 9 converts it to

    s = matmul(x=q, y=k, transpose_x=False, transpose_y=True)
    s = mul(s, scale)                       # scale = head_dim**-0.5 (const; fp16-rounded in fp16 programs)
    s = add(s, mask)                        # additive 0 / -inf mask, [S, T] (broadcast)
    [s = cast(s, fp32)]                     # only if the softmax ran in another dtype
    p = softmax(s, axis=-1)
    [p = cast(p, <q dtype>)]
    o = matmul(x=p, y=v, transpose_x=False, transpose_y=False)

which becomes ``o = scaled_dot_product_attention(query=q, key=k, value=v, attn_mask=mask)`` (the op
scales by 1/sqrt(E) itself). A scale other than 1/sqrt(E) (beyond the rounding of the const to the
program's dtype) is folded into q: ``query = mul(q, scale * sqrt(E))``. Rewritten only when every
intermediate (scores, scaled, masked, probabilities, casts) has this chain as its only user, q/k/v/o
share one fp dtype and the mask is bool or of that dtype. The op needs opset iOS 18: functions
below it are left alone.
"""
from __future__ import annotations

import math

import numpy as np

# relative error of a scale const rounded to the program's dtype (half an ulp)
_SCALE_RTOL = {"fp16": 2.0 ** -11, "fp32": 2.0 ** -24}


def _only_use(var, op) -> bool:
    """``var`` is consumed by ``op`` alone (once) and is not a block output."""
    return (len(var.child_ops) == 1 and var.child_ops[0] is op and not var.consuming_blocks
            and sum(1 for v in op.get_flattened_inputs() if v is var) == 1)


def _producer(var, op_type: str):
    op = var.op
    return op if op is not None and op.op_type == op_type else None


def _flag(op, name: str) -> bool:
    v = getattr(op, name, None)
    return bool(v.val) if v is not None else False


def _dtype(var) -> str:
    from coremltools.converters.mil.mil import types

    return types.builtin_to_string(var.dtype)


def _match(softmax) -> dict | None:
    """The chain around ``softmax`` as a dict of vars / ops, or None if it is not the attention pattern."""
    x = softmax.x
    if x.rank < 3 or int(softmax.axis.val) not in (-1, x.rank - 1):
        return None
    chain = [softmax]
    # after: [cast] -> matmul(probs, v)
    out = softmax.outputs[0]
    if len(out.child_ops) != 1:
        return None
    nxt = out.child_ops[0]
    cast_out = None
    if nxt.op_type == "cast":
        cast_out = nxt
        if not _only_use(out, nxt) or len(nxt.outputs[0].child_ops) != 1:
            return None
        out, nxt = nxt.outputs[0], nxt.outputs[0].child_ops[0]
    if nxt.op_type != "matmul" or nxt.x is not out or not _only_use(out, nxt):
        return None
    pv = nxt
    if _flag(pv, "transpose_x") or _flag(pv, "transpose_y"):
        return None
    # before: matmul(q, k^T) -> mul(scale) -> add(mask) -> [cast]
    cast_in = _producer(x, "cast")
    if cast_in is not None:
        if not _only_use(x, softmax):
            return None
        chain.append(cast_in)
        x = cast_in.x
    elif not _only_use(x, softmax):
        return None
    add = _producer(x, "add")
    if add is None or not _only_use(x, cast_in or softmax):
        return None
    for scaled, mask in ((add.x, add.y), (add.y, add.x)):
        mul = _producer(scaled, "mul")
        if mul is not None and mask is not scaled:
            break
    else:
        return None
    if not _only_use(scaled, add):
        return None
    for scores, scale in ((mul.x, mul.y), (mul.y, mul.x)):
        qk = _producer(scores, "matmul")
        if qk is not None and scale.val is not None and np.size(scale.val) == 1:
            break
    else:
        return None
    if not _only_use(scores, mul) or _flag(qk, "transpose_x") or not _flag(qk, "transpose_y"):
        return None
    q, k, v, o = qk.x, qk.y, pv.y, pv.outputs[0]
    dt = _dtype(q)
    if dt not in ("fp16", "fp32") or {_dtype(k), _dtype(v), _dtype(o)} != {dt}:
        return None
    if not (q.rank == k.rank == v.rank == o.rank) or mask.rank > q.rank or _dtype(mask) not in ("bool", dt):
        return None
    e = q.shape[-1]
    if not isinstance(e, (int, np.integer)):
        return None
    chain += [pv, qk, mul, add] + ([cast_out] if cast_out is not None else [])
    return {"q": q, "k": k, "v": v, "mask": mask, "scale": float(np.asarray(scale.val).reshape(())),
            "e": int(e), "dtype": dt, "anchor": pv, "ops": chain}


def fuse_sdpa(prog) -> int:
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb  # lazy: coremltools is a heavy import

    count = 0
    for func in prog.functions.values():
        if func.opset_version is None or func.opset_version < ct.target.iOS18:
            continue
        for op in list(func.operations):
            if op.op_type != "softmax" or op.enclosing_block is None:
                continue
            m = _match(op)
            if m is None:
                continue
            anchor, block = m["anchor"], op.enclosing_block
            q, factor = m["q"], m["scale"] * math.sqrt(m["e"])
            with block, mb.set_before_op(anchor):
                if abs(factor - 1.0) > _SCALE_RTOL[m["dtype"]]:
                    np_dt = np.float16 if m["dtype"] == "fp16" else np.float32
                    q = mb.mul(x=q, y=np_dt(factor), name=f"{anchor.name}_sdpa_prescale")
                new = mb.scaled_dot_product_attention(query=q, key=m["k"], value=m["v"], attn_mask=m["mask"],
                                                      name=f"{anchor.name}_sdpa")
            block.replace_uses_of_var_after_op(anchor_op=anchor, old_var=anchor.outputs[0], new_var=new)
            block.remove_ops(m["ops"])
            count += 1
    return count
