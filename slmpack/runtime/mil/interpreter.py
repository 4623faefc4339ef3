"""Execute one function of a parsed MIL program on numpy arrays.

``Interpreter(program, "main")`` resolves every op once: constants and constexpr decompressions are
evaluated up front, and an op without an implementation raises :class:`UnsupportedOpError` right
there (before any input is fed). ``run(feeds, states)`` then walks the ops in order; each result is
cast to its declared dtype and checked against its declared rank and static dims.
"""
from __future__ import annotations

import numpy as np

from . import (ops_constexpr, ops_elementwise, ops_nn, ops_normalization, ops_state,  # noqa: F401
               ops_tensor)
from .errors import MILRuntimeError, UnsupportedOpError
from .ops_state import StateSlot
from .program import Literal, Op, Program
from .registry import CONSTEXPR_OPS, lookup
from .values import TensorSpec


def coerce(value, spec: TensorSpec, op: Op) -> np.ndarray:
    """The op's result as the declared type: dtype cast (fp16 rounding happens here), rank/dims checked."""
    arr = np.asarray(value)
    if spec.mil_type is None:
        return value
    arr = arr.astype(spec.mil_type.np_dtype, copy=False)
    if spec.shape is not None:
        if arr.ndim != len(spec.shape) or any(d is not None and d != n for d, n in zip(spec.shape, arr.shape)):
            raise MILRuntimeError(f"op {op.type} {op.name!r} produced shape {arr.shape} for output {spec.name!r}, "
                                  f"declared {spec.describe()}", details={"op": op.type, "name": op.name})
    return arr


class Interpreter:
    def __init__(self, program: Program, function: str = "main"):
        if function not in program.functions:
            raise MILRuntimeError(f"program has no function {function!r} (has: {', '.join(program.functions)})")
        self.program = program
        self.function = program.functions[function]
        self.constants: dict[str, object] = {}
        self.steps: list[tuple[Op, object]] = []
        self.op_counts: dict[str, int] = {}
        for op in self.function.ops:
            self.op_counts[op.type] = self.op_counts.get(op.type, 0) + 1
            if op.has_blocks:
                raise UnsupportedOpError(op.type, "ops with nested blocks (control flow)", op_name=op.name)
            if op.type == "const":
                self.constants[op.outputs[0].name] = coerce(op.attributes["val"], op.outputs[0], op)
                continue
            fn = lookup(op.type, op.name)
            if op.type in CONSTEXPR_OPS:
                self._store(op, fn(self._args(op, self.constants), op), self.constants)
            else:
                self.steps.append((op, fn))

    @property
    def state_specs(self) -> list[TensorSpec]:
        return [i for i in self.function.inputs if i.is_state]

    @property
    def input_specs(self) -> list[TensorSpec]:
        return [i for i in self.function.inputs if not i.is_state]

    def _args(self, op: Op, env: dict) -> dict:
        # iOS16-style constexpr ops carry their parameters as attributes rather than inputs
        args = {k: v for k, v in op.attributes.items() if k != "name"}
        for param, bindings in op.inputs.items():
            vals = []
            for b in bindings:
                if isinstance(b, Literal):
                    vals.append(b.value)
                elif b in env:
                    vals.append(env[b])
                else:
                    raise MILRuntimeError(f"op {op.type} {op.name!r}: input {param}={b!r} is not defined")
            # variadic params (concat ``values``) are tuples of bindings; single bindings are values
            args[param] = vals if (len(vals) != 1 or param == "values") else vals[0]
        return args

    @staticmethod
    def _store(op: Op, result, env: dict) -> None:
        if not op.outputs:
            return
        results = result if isinstance(result, tuple) else (result,)
        if len(results) != len(op.outputs):
            raise MILRuntimeError(f"op {op.type} {op.name!r} returned {len(results)} values, declares "
                                  f"{len(op.outputs)}")
        for spec, value in zip(op.outputs, results):
            env[spec.name] = coerce(value, spec, op)

    def new_states(self) -> dict[str, np.ndarray]:
        return {s.name: np.zeros(s.shape, dtype=s.mil_type.np_dtype) for s in self.state_specs}

    def run(self, feeds: dict[str, np.ndarray], states: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Outputs by name. ``states`` (name -> array) is updated in place by ``write_state``."""
        env = dict(self.constants)
        states = states if states is not None else {}
        for spec in self.function.inputs:
            if spec.is_state:
                if spec.name not in states:
                    raise MILRuntimeError(f"state {spec.name!r} was not provided")
                env[spec.name] = StateSlot(spec.name, states, spec.mil_type.np_dtype, spec.shape)
                continue
            if spec.name not in feeds:
                raise MILRuntimeError(f"input {spec.name!r} was not provided")
            value = np.asarray(feeds[spec.name])
            if value.dtype != spec.mil_type.np_dtype:
                raise MILRuntimeError(f"input {spec.name!r} must be {spec.mil_type.name}, got {value.dtype}")
            env[spec.name] = coerce(value, spec, Op("input", spec.name, {}, [spec], {}))
        for op, fn in self.steps:
            try:
                result = fn(self._args(op, env), op)
            except (MILRuntimeError, UnsupportedOpError):
                raise
            except Exception as e:  # numpy errors inside an op: name the op
                raise MILRuntimeError(f"op {op.type} {op.name!r} failed: {type(e).__name__}: {e}",
                                      details={"op": op.type, "name": op.name}) from e
            self._store(op, result, env)
        return {name: env[name] for name in self.function.outputs}
