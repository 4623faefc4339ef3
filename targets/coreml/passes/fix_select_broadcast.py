"""Give ``select`` ops the type their ``cond`` broadcasts to.

coremltools 9 infers a ``select``'s output type from ``a`` and ``b`` only. ``torch.where(mask, 0.0,
-inf)`` with a dynamic-length mask therefore converts to ``select(cond=<[S, T] bool>, a=0.0,
b=-inf)`` declared as an fp scalar, although every runtime (and our interpreter) produces ``[S, T]``.
The rewrite fills one scalar branch to ``cond``'s shape, so the declared type is the true one:
``select(cond, fill(shape(cond), a), b)``. Values are unchanged.
"""
from __future__ import annotations

import numpy as np


def _needs_fix(op) -> bool:
    return op.op_type == "select" and op.cond.rank > op.outputs[0].rank


def fix_select_broadcast(prog) -> int:
    from coremltools.converters.mil import Builder as mb  # lazy: coremltools is a heavy import

    count = 0
    for func in prog.functions.values():
        for op in list(func.operations):
            if not _needs_fix(op):
                continue
            a, b, cond = op.a, op.b, op.cond
            with op.enclosing_block, mb.set_before_op(op):
                shape = mb.shape(x=cond, name=f"{op.name}_cond_shape")
                if a.val is not None and np.ndim(a.val) == 0:
                    a = mb.fill(shape=shape, value=a.val, name=f"{op.name}_a_full")
                elif b.val is not None and np.ndim(b.val) == 0:
                    b = mb.fill(shape=shape, value=b.val, name=f"{op.name}_b_full")
                else:
                    zero = np.zeros((), dtype=np.float16 if a.dtype.__name__ == "fp16" else np.float32)
                    a = mb.add(x=a, y=mb.fill(shape=shape, value=zero), name=f"{op.name}_a_full")
                new = mb.select(cond=cond, a=a, b=b, name=f"{op.name}_broadcast")
            op.enclosing_block.replace_uses_of_var_after_op(anchor_op=op, old_var=op.outputs[0], new_var=new,
                                                           no_check_var_types=True)
            op.enclosing_block.remove_ops([op])
            count += 1
    return count
