"""ExecuTorch lowering pipeline: reference module -> model.pte (one ``forward`` method + metadata).

The steps, in order (each a small function below):
  1. prepare    private copy of the reference: cast to the precision, encode the QuantPlan,
                source transforms (RMSNorm mean as linear; custom SDPA + update_cache)
  2. export     torch.export of forward(tokens [1,S], input_pos [S]) with S in 1..max_prompt,
                under torch.no_grad()
  3. lower      to_edge_transform_and_lower with XnnpackPartitioner (LinearConfig extended for
                int8 weight-only, tanh GELU left out: partition.py) and the runner's constant
                methods (get_max_seq_len, get_max_context_len, ...)
  4. report     delegated vs portable op counts and the share of FLOPs XNNPACK runs
  5. emit       to_executorch (constraint-based memory planning of the dynamic shapes)
  6. save       model.pte; optionally model.bpte (BundledProgram with reference test cases)
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch.export import Dim, ExportedProgram, export

from slmpack.errors import ErrorCode, ToolchainError
from slmpack.exporter.reference import ReferenceModel
from slmpack.targets.base import Artifact, IoSignature, KvCacheInfo, Report, RuntimeInfo, freeze
from slmpack.targets.executorch import delegation
from slmpack.targets.executorch.metadata import constant_methods
from slmpack.targets.executorch.options import ExecuTorchOptions, Sdpa
from slmpack.targets.executorch.program import build_program, cache_dtype

MODEL_FILE, BUNDLE_FILE = "model.pte", "model.bpte"
METHOD = "forward"


STEP_CODES = {"export": ErrorCode.E_EXECUTORCH_EXPORT, "lowering": ErrorCode.E_EXECUTORCH_LOWERING,
              "emit": ErrorCode.E_EXECUTORCH_EMIT}


def _fail(step: str, e: Exception) -> ToolchainError:
    return ToolchainError(f"ExecuTorch {step} failed: {type(e).__name__}: {(str(e).splitlines() or [''])[0]}",
                          STEP_CODES[step])


def prepare(ref: ReferenceModel, max_context: int, options: ExecuTorchOptions, plan=None):
    return build_program(ref, max_context, options, plan)


def export_forward(module, max_prompt: int) -> ExportedProgram:
    args = (torch.zeros(1, min(3, max_prompt), dtype=torch.long), torch.arange(min(3, max_prompt)))
    dyn = None
    if max_prompt > 1:
        seq = Dim("seq", min=1, max=max_prompt)
        dyn = ({1: seq}, {0: seq})
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return export(module, args, dynamic_shapes=dyn, strict=False)
    except Exception as e:  # torch.export raises many types
        raise _fail("export", e) from e


def lower_edge(ep: ExportedProgram, methods: dict, custom_ops: bool):
    from executorch.exir import EdgeCompileConfig, to_edge_transform_and_lower

    from slmpack.targets.executorch.partition import partitioner

    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return to_edge_transform_and_lower(
                {METHOD: ep}, partitioner=[partitioner()], constant_methods=methods,
                compile_config=EdgeCompileConfig(_check_ir_validity=not custom_ops))
    except Exception as e:
        raise _fail("lowering", e) from e


def emit(edge):
    from executorch.exir import ExecutorchBackendConfig

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return edge.to_executorch(ExecutorchBackendConfig(extract_delegate_segments=True))
    except Exception as e:
        raise _fail("emit", e) from e


def program_operators(et_program) -> tuple[list[str], list[str]]:
    """Non-delegated kernels ``forward`` needs at run time (for selective builds) and its delegates."""
    plan = next(p for p in et_program.executorch_program.execution_plan if p.name == METHOD)
    ops = sorted({f"{o.name}.{o.overload}" if o.overload else o.name for o in plan.operators})
    return ops, sorted({d.id for d in plan.delegates})


def lower(programs, spec, options: ExecuTorchOptions, out_dir: Path, gen: dict, plan=None) -> Artifact:
    cfg = programs.config
    ref = programs.module.ref
    module, transforms = prepare(ref, cfg.max_context, options, plan)
    custom = options.sdpa is Sdpa.CUSTOM and transforms.get("custom_sdpa", 0) > 0  # declined: written-out attention
    quant = None
    if plan is not None and plan.quantized_names():
        from slmpack.targets.executorch.quantize import encodings

        enc = encodings(plan)
        notes = []
        if "int8_weight_only" in enc.values():
            notes.append("int8 weight-only linears run XNNPACK's f32-qc8w GEMM (fp32 activations, int8 weights)")
        if "8da4w" in enc.values():
            notes.append("group-wise int4 scales execute as bf16 in XNNPACK (qb4w)")
        if "embedding_int8" in enc.values():
            notes.append("embeddings gather the plan's integers and scales (portable index), dequantized per token")
        quant = {"recipe": plan.recipe, "encodings": enc, "note": "; ".join(notes)}
    ep = export_forward(module, cfg.max_prompt)
    methods = constant_methods(spec, gen, cfg.max_prompt, cfg.max_context, custom)
    edge = lower_edge(ep, methods, custom)
    report = delegation.report(edge.exported_program(METHOD), cfg.max_prompt, cfg.max_context)
    et_program = emit(edge)
    (out_dir / MODEL_FILE).write_bytes(et_program.buffer)
    files = [MODEL_FILE]   # model.bpte (options.bundled_program) follows: ExecuTorchTarget.write_reference
    operators, delegates = program_operators(et_program)
    kv_dtype = str(cache_dtype(options)).replace("torch.", "")
    kv_shape = ([1, "max_context", spec.num_kv_heads, spec.head_dim] if custom
                else [1, spec.num_kv_heads, "max_context", spec.head_dim])
    logits_dtype = str(options.precision.torch_dtype).replace("torch.", "")
    return Artifact(
        primary=MODEL_FILE, files=tuple(files),
        io=IoSignature.from_json({"method": METHOD,
            "inputs": [{"name": "tokens", "dtype": "int64", "shape": [1, "seq_len"]},
                       {"name": "input_pos", "dtype": "int64", "shape": ["seq_len"]}],
            "outputs": [{"name": "logits", "dtype": logits_dtype, "shape": [1, "seq_len", spec.vocab_size]}],
            "seq_len": [1, cfg.max_prompt], "constant_methods": methods}),
        kv_cache=KvCacheInfo("buffer", kv_dtype, tuple(kv_shape), cfg.max_context, freeze({
            "per_layer": ["k_cache", "v_cache"], "update": "llama::update_cache" if custom else "index_copy_"})),
        runtime=RuntimeInfo("executorch", "1.5.0", freeze({"backends": delegates, "operators": operators,
                 "kernel_libraries": ["portable"] + (["llm_custom_ops (EXECUTORCH_BUILD_KERNELS_LLM)"]
                                                     if any(o.startswith("llama::") for o in operators) else []),
                 "llm_runner": "executorch.extension.llm.runner.TextLLMRunner"})),
        report=Report.from_json({"precision": options.precision.value, "sdpa": options.sdpa.value, "source_transforms": transforms,
                # attention + KV-cache update as one kernel: llama::custom_sdpa per layer, counted in the graph
                "attention_blocks_fused": f"{report.get('portable_ops', {}).get('llama.custom_sdpa.default', 0)}"
                                          f"/{spec.num_layers}",
                "quantization": quant, "delegation": report, "pte_bytes": len(et_program.buffer),
                "summary": delegation.summary_line(report)}),
    )
