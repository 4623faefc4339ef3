"""ExecuTorch lowering of an encoder -> model.pte with one static method per sequence length.

A single dynamic-shape ``forward`` (batch and sequence dynamic) lowered and ran for small shapes but
crashed the 1.5.1 runtime (segfault) past batch 8 / sequence 64 on this machine, so the program
carries static, batch-1 methods ``encode_<n>`` (the LiteRT lengths: 32 / 128 / 256 / 512 below
max_sequence, plus it), exactly memory-planned; the runtime pads each text to the smallest method
that holds it and masks the padding.

Steps, in order:
  0. quantize (QuantPlan only) the plan's integers into a copy of the module (quantize.apply_plan:
              int8 weight-only, 8da8w, 8da4w as XNNPACK runs them; embeddings gathered from int8)
  1. export   torch.export of each length (static shapes, under no_grad)
  2. lower    to_edge_transform_and_lower of all methods with XnnpackPartitioner
  3. report   delegated vs not-delegated op counts (the longest method's edge graph)
  4. emit     to_executorch, write model.pte
"""
from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

import torch

from slmpack.targets.base import Artifact, IoSignature, Report, RuntimeInfo, freeze
from slmpack.targets.executorch.lower import MODEL_FILE, _fail, emit
from slmpack.targets.executorch.options import ExecuTorchOptions
from slmpack.targets.executorch.partition import partitioner
from slmpack.targets.tflite.encoder import sample_kwargs, signature_lengths, signature_name

ENCODER_OPTIONS = ExecuTorchOptions()


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


def quantized_module(programs, plan):
    """The program module with the plan applied to a private copy of its encoder."""
    import copy

    from slmpack.exporter.encoder.program import EncoderProgram
    from slmpack.targets.executorch.quantize import apply_plan, encodings

    ref = copy.deepcopy(programs.module.ref)
    count = apply_plan(ref, plan, ENCODER_OPTIONS)
    return EncoderProgram(ref).eval(), {"quantized_linears": count,
                                        "encodings": dict(sorted(encodings(plan).items()))}


def lower_encoder(programs, spec, out_dir: Path, plan=None) -> Artifact:
    from executorch.exir import to_edge_transform_and_lower
    from torch.export import export

    lengths = signature_lengths(programs.max_sequence)
    module, qreport = (programs.module, None) if plan is None or not plan.quantized_names() \
        else quantized_module(programs, plan)
    methods = {}
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for n in lengths:
                kw = sample_kwargs(programs.input_names, n, spec.vocab_size)
                args = tuple(kw[k].to(torch.long) for k in programs.input_names)
                methods[signature_name(n)] = export(module, args, strict=False)
    except Exception as e:
        raise _fail("export", e) from e
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            edge = to_edge_transform_and_lower(methods, partitioner=[partitioner()])
    except Exception as e:
        raise _fail("lowering", e) from e
    rep = _delegation(edge.exported_program(signature_name(lengths[-1])))
    et_program = emit(edge)
    (out_dir / MODEL_FILE).write_bytes(et_program.buffer)
    delegates = sorted({d.id for p in et_program.executorch_program.execution_plan for d in p.delegates})
    operators = sorted({f"{o.name}.{o.overload}" if o.overload else o.name
                        for p in et_program.executorch_program.execution_plan for o in p.operators})
    shape = {"sentence_embedding": [1, spec.hidden_size], "logits": [1, len(spec.id2label)],
             "last_hidden_state": [1, "n", spec.hidden_size]}[programs.output_name]
    return Artifact(
        primary=MODEL_FILE, files=(MODEL_FILE,),
        io=IoSignature.from_json({"methods": [signature_name(n) for n in lengths], "lengths": list(lengths), "batch": 1,
            "inputs": [{"name": n, "dtype": "int64", "shape": [1, "n"]} for n in programs.input_names],
            "outputs": [{"name": programs.output_name, "dtype": "float32", "shape": shape}]}),
        kv_cache=None,
        runtime=RuntimeInfo("executorch", "1.5.0", freeze({"backends": delegates, "operators": operators})),
        report=Report.from_json({"delegation": rep, "pte_bytes": len(et_program.buffer), "methods": len(lengths),
                **({"quantization": qreport} if qreport else {}),
                "summary": f"{len(lengths)} static methods ({', '.join(map(str, lengths))}); XNNPACK: "
                           f"{rep['xnnpack_partitions']} partitions, {rep['delegated_op_count']} ops delegated, "
                           f"{rep['portable_op_count']} not ({', '.join(rep['portable_ops']) or '-'})"}),
    )


def check_encoder(pkg_dir: Path, manifest: dict) -> list[str]:
    """The program loads with internal-consistency verification and has ``forward``."""
    from slmpack.runtime.adapters.executorch import load_program

    try:
        program = load_program((Path(pkg_dir) / manifest["artifact"]).read_bytes(), verify=True)
    except RuntimeError as e:
        return [f"{manifest['artifact']}: {str(e).splitlines()[0]}"]
    names, want = set(program.method_names), set(manifest["io"]["methods"])
    return [] if names == want else [f"{manifest['artifact']}: methods {sorted(names)} differ from {sorted(want)}"]
