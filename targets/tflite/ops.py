"""Declared support of the LiteRT target: model features it exports (checked before slow work),
and the op inventory of a converted flatbuffer (builtins, composites, forbidden Flex ops)."""
from __future__ import annotations

from collections import Counter

from slmpack.errors import UnsupportedError
from slmpack.exporter.spec import ModelSpec
from slmpack.targets.base import Unsupported
from slmpack.targets.tflite import quantize
from slmpack.targets.tflite.options import TFLiteOptions
from slmpack.runtime.tflite_verify import CUSTOM, ModelSummary, OpInfo

FLEX_PREFIX = "Flex"        # TensorFlow ops run through the Flex delegate carry custom codes "Flex<Op>"
KNOWN_CUSTOM_OPS: frozenset[str] = frozenset()   # custom ops with kernels in stock LiteRT we accept


def unsupported_features(spec: ModelSpec, options: TFLiteOptions, plan=None) -> list[Unsupported]:
    """Every Llama-family feature the reference module has (GQA, biases, tied embeddings, rope
    variants, sliding window) lowers to builtin ops; what can fail is the weight encoding."""
    return quantize.unsupported(spec, options, plan)


def op_name(code: int, custom: str) -> str:
    if code == CUSTOM:
        return custom or "CUSTOM"
    from ai_edge_litert.schema_py_generated import BuiltinOperator

    names = {v: k for k, v in vars(BuiltinOperator).items() if not k.startswith("_")}
    return names.get(code, f"BUILTIN_{code}")


def source_layer(op: OpInfo) -> str:
    """The torch module recorded in the op's first output tensor name: litert-torch names tensors
    ``<wrapper class path>/<module class path>_<attribute>;<n>``; we keep ``<Class>_<attribute>``
    (e.g. ``MLP_mlp``, ``Linear_q_proj``)."""
    if not op.outputs:
        return "?"
    name = op.outputs[0].split(";")[0].rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[-1] or name


def inventory(summary: ModelSummary) -> dict:
    """Op counts per name over the signature subgraphs, composites by name, custom ops."""
    signature_subgraphs = {s.subgraph for s in summary.signatures.values()}
    ops = Counter(op_name(o.opcode, o.custom_code) for o in summary.ops if o.subgraph in signature_subgraphs)
    composites = Counter(o.composite for o in summary.ops if o.composite)
    decomposition_ops = Counter(op_name(o.opcode, o.custom_code) for o in summary.ops
                                if o.subgraph not in signature_subgraphs)
    return {"ops": dict(sorted(ops.items())), "composites": dict(sorted(composites.items())),
            "decomposition_ops": dict(sorted(decomposition_ops.items())),
            "custom_ops": sorted({o.custom_code for o in summary.ops if o.opcode == CUSTOM})}


def forbidden_ops(summary: ModelSummary, allow_flex: bool = False) -> list[str]:
    """One line per Flex (unless allowed) or unknown custom op: op name, signature/subgraph, layer."""
    out = []
    for o in summary.ops:
        if o.opcode != CUSTOM or o.custom_code in KNOWN_CUSTOM_OPS:
            continue
        if o.custom_code.startswith(FLEX_PREFIX):
            if allow_flex:
                continue
            why = "needs the Flex (TensorFlow) delegate, which is not allowed"
        else:
            why = "is a custom op with no kernel in stock LiteRT"
        out.append(f"op {o.custom_code} ({summary.subgraph_names[o.subgraph]} op #{o.index}, layer "
                   f"{source_layer(o)}) {why}")
    return out


def require_builtin_only(summary: ModelSummary, allow_flex: bool = False) -> None:
    problems = forbidden_ops(summary, allow_flex)
    if problems:
        raise UnsupportedError("the converted model " + "; ".join(problems), "E_TFLITE_FLEX_OP",
                               details={"ops": problems})
