"""ExecuTorch lowering of an encoder program -> model.pte (``forward``, dynamic batch and sequence).

Steps, in order:
  1. lower    to_edge_transform_and_lower of the traced ExportedProgram with XnnpackPartitioner
  2. report   delegated vs not-delegated op counts (the edge graph after partitioning)
  3. emit     to_executorch (memory planning of the dynamic shapes), write model.pte
"""
from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

import torch

from slmpack.targets.base import Artifact
from slmpack.targets.executorch.lower import MODEL_FILE, METHOD, _fail, emit, program_operators


def _delegation(edge_program) -> dict:
    delegated, portable = 0, Counter()
    for node in edge_program.graph_module.graph.nodes:
        if node.op != "call_function":
            continue
        name = getattr(node.target, "__name__", str(node.target))
        if name == "executorch_call_delegate":
            delegated += 1
        elif name != "getitem" and not name.startswith("sym_"):
            portable[name] += 1
    inner = Counter()
    for _, mod in edge_program.graph_module.named_children():  # lowered modules: count what they hold
        graph = getattr(getattr(mod, "original_module", None), "graph", None)
        for node in (graph.nodes if graph is not None else ()):
            if node.op == "call_function":
                inner[getattr(node.target, "__name__", str(node.target))] += 1
    return {"xnnpack_partitions": delegated, "delegated_op_count": sum(inner.values()),
            "portable_op_count": sum(portable.values()), "portable_ops": dict(sorted(portable.items())),
            "backend": "XnnpackBackend"}


def lower_encoder(programs, spec, out_dir: Path) -> Artifact:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            edge = to_edge_transform_and_lower({METHOD: programs.program}, partitioner=[XnnpackPartitioner()])
    except Exception as e:
        raise _fail("lowering", e) from e
    rep = _delegation(edge.exported_program(METHOD))
    et_program = emit(edge)
    (out_dir / MODEL_FILE).write_bytes(et_program.buffer)
    operators, delegates = program_operators(et_program)
    shape = {"sentence_embedding": ["batch", spec.hidden_size], "logits": ["batch", len(spec.id2label)],
             "last_hidden_state": ["batch", "sequence", spec.hidden_size]}[programs.output_name]
    return Artifact(
        primary=MODEL_FILE, files=[MODEL_FILE],
        io={"method": METHOD,
            "inputs": [{"name": n, "dtype": "int64", "shape": ["batch", "sequence"]} for n in programs.input_names],
            "outputs": [{"name": programs.output_name, "dtype": "float32", "shape": shape}],
            "sequence": [2, programs.max_sequence]},
        kv_cache={"layout": "none"},
        runtime={"name": "executorch", "min_version": "1.5.0", "backends": delegates, "operators": operators},
        report={"delegation": rep, "pte_bytes": len(et_program.buffer),
                "summary": f"XNNPACK: {rep['xnnpack_partitions']} partitions, {rep['delegated_op_count']} ops "
                           f"delegated, {rep['portable_op_count']} not ({', '.join(rep['portable_ops']) or '-'})"},
    )


def check_encoder(pkg_dir: Path, manifest: dict) -> list[str]:
    """The program loads with internal-consistency verification and has ``forward``."""
    from slmpack.targets.executorch.runner import load_program

    try:
        program = load_program((Path(pkg_dir) / manifest["artifact"]).read_bytes(), verify=True)
    except RuntimeError as e:
        return [f"{manifest['artifact']}: {str(e).splitlines()[0]}"]
    names = set(program.method_names)
    return [] if METHOD in names else [f"{manifest['artifact']}: no method {METHOD} (has {sorted(names)})"]
