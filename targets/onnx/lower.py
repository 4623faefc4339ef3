"""ONNX lowering pipeline: traced io_concat program -> model.onnx + genai_config.json.

The steps, in order (each a small function below):
  1. export      torch.onnx.export(dynamo=True) of the traced ExportedProgram, GenAI I/O names
  1b. fuse       ONNX Runtime contrib-op fusions on the exported graph (targets/onnx/fusions/):
                 SkipSimplifiedLayerNormalization, RMSNormalization (opset >= 23), RotaryEmbedding,
                 GroupQueryAttention; then common-subexpression and dead-node removal
  2. name_dims   symbolic dims renamed to sequence_length / past_sequence_length / total_sequence_length
  3. normalize   strip nondeterministic metadata (doc strings, producer build info)
  4. quantize    (QuantPlan only) the plan's integer weights encoded natively: MatMulNBits,
                 QDQ, GatherBlockQuantized (quantize.py). Runs after every float graph rewrite.
  5. save        one file, or model.onnx + model.onnx.data past the size threshold (float models
                 past it are streamed from the IR: ``save_streaming``, no protobuf copy of the weights)
  6. check       onnx.checker.check_model(full_check=True)
  7. genai       genai_config.json for onnxruntime-genai
"""
from __future__ import annotations

import json
from pathlib import Path

import onnx
import onnx_ir as ir
import torch
from onnx_ir.passes import common as ir_passes

from slmpack.errors import ToolchainError
from slmpack.runtime.records import passes_to_json
from slmpack.targets.base import Artifact, IoSignature, KvCacheInfo, Report, RuntimeInfo, TensorSig, freeze
from slmpack.targets.onnx import lora_inputs, names, quantize
from slmpack.targets.onnx.fusions import (fuse_group_query_attention, fuse_rms_normalization, fuse_rotary_embedding,
                                          fuse_skip_simplified_layer_norm)
from slmpack.targets.onnx.fusions._base import apply
from slmpack.targets.onnx.genai_config import genai_config
from slmpack.targets.onnx.genai_tokenizer import rewrite_for_genai
from slmpack.targets.onnx.options import OnnxOptions

MODEL_FILE, DATA_FILE = "model.onnx", "model.onnx.data"


def export(programs, spec, options: OnnxOptions) -> ir.Model:
    try:
        prog = torch.onnx.export(
            programs.prefill, (), dynamo=True, opset_version=options.opset, optimize=options.optimize,
            input_names=names.input_names(spec.num_layers), output_names=names.output_names(spec.num_layers),
            verbose=False, report=False)
    except Exception as e:
        raise ToolchainError(f"torch.onnx.export failed: {type(e).__name__}: {str(e).splitlines()[0]}",
                             "E_ONNX_EXPORT") from e
    return prog.model


# the ORT ops the fusions produce, as reported in the manifest (report["fusions"])
FUSED_OPS = ("SkipSimplifiedLayerNormalization", "RMSNormalization", "RotaryEmbedding", "GroupQueryAttention")


def fuse(model: ir.Model, spec, options: OnnxOptions) -> dict:
    """Apply the fusions in order; return fused-op counts and every pass's count / declined reasons."""
    ir_passes.ShapeInferencePass()(model)  # the patterns' checks read shapes
    passes = [
        fuse_skip_simplified_layer_norm.rule(),
        fuse_rms_normalization.rule(options.opset),
        fuse_rotary_embedding.rule(),
        *fuse_group_query_attention.rules(),
    ]
    results = [apply(p, model) for p in passes]
    ir_passes.CommonSubexpressionEliminationPass()(model)
    ir_passes.RemoveUnusedNodesPass()(model)
    counts = {op: sum(1 for n in model.graph if n.op_type == op) for op in FUSED_OPS}
    return {
        "fusions": counts,
        "attention_blocks_fused": f"{counts['GroupQueryAttention']}/{spec.num_layers}",
        "fusion_passes": passes_to_json(tuple(results)),
    }


def name_dims(model: onnx.ModelProto) -> None:
    """Replace exporter symbols (s15, s15 + s70, ...) by the names GenAI's builder uses."""
    def set_dim(vi, axis, name):
        vi.type.tensor_type.shape.dim[axis].dim_param = name

    for vi in model.graph.input:
        if vi.name in ("input_ids", "position_ids"):
            set_dim(vi, 0, "batch_size"), set_dim(vi, 1, names.SEQ)
        elif vi.name == "attention_mask":
            set_dim(vi, 0, "batch_size"), set_dim(vi, 1, names.TOTAL)
        elif vi.name.startswith("past_key_values."):
            set_dim(vi, 0, "batch_size"), set_dim(vi, 2, names.PAST)
    for vi in model.graph.output:
        if vi.name == "logits":
            set_dim(vi, 0, "batch_size"), set_dim(vi, 1, names.SEQ)
        elif vi.name.startswith("present."):
            set_dim(vi, 0, "batch_size"), set_dim(vi, 2, names.TOTAL)
    del model.graph.value_info[:]  # intermediate shapes carry exporter symbols; ORT re-infers them


def normalize(model: onnx.ModelProto) -> None:
    model.producer_name, model.producer_version = "slmpack", "0.1.0"
    model.doc_string = ""
    model.graph.doc_string = ""
    for node in model.graph.node:
        node.doc_string = ""
        del node.metadata_props[:]  # exporter stack traces: absolute paths, ~1 KB per node
    del model.metadata_props[:]
    for func in model.functions:
        for node in func.node:
            node.doc_string = ""


def save(model: onnx.ModelProto, out_dir: Path, options: OnnxOptions) -> list[str]:
    path = out_dir / MODEL_FILE
    if model.ByteSize() > options.external_data_threshold_bytes:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=DATA_FILE, size_threshold=1024)
        return [MODEL_FILE, DATA_FILE]
    onnx.save_model(model, str(path))
    return [MODEL_FILE]


def weight_bytes(model: ir.Model) -> int:
    return sum(v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None)


def save_streaming(model: ir.Model, out_dir: Path) -> list[str]:
    """Large float models: onnx_ir writes every initializer straight from the traced tensors into
    model.onnx.data, one at a time; only the weightless graph becomes a protobuf (renamed dims,
    normalized, saved again). ``ir.to_proto`` + ``onnx.save`` instead held two extra full copies
    of the weights (measured: 869 -> 1301 MB peak on an 8-layer SmolLM shape, 226 MB of weights)."""
    path = out_dir / MODEL_FILE
    ir.save(model, path, external_data=DATA_FILE, size_threshold_bytes=1024, max_workers=1)
    graph = onnx.load(str(path), load_external_data=False)
    name_dims(graph)
    normalize(graph)
    onnx.save_model(graph, str(path))
    return [MODEL_FILE, DATA_FILE]


def check(out_dir: Path) -> None:
    try:
        onnx.checker.check_model(str(out_dir / MODEL_FILE), full_check=True)
    except onnx.checker.ValidationError as e:
        raise ToolchainError(f"onnx.checker rejected the model: {str(e).splitlines()[0]}", "E_ONNX_CHECK") from e


def lower(programs, spec, options: OnnxOptions, out_dir: Path, gen: dict, plan=None) -> Artifact:
    ir_model = export(programs, spec, options)
    fused = fuse(ir_model, spec, options)
    lora = lora_inputs.expose(ir_model)   # separate LoRA adapter: its buffers become swappable inputs
    quantized = plan is not None and bool(plan.quantized_names())
    if not quantized and weight_bytes(ir_model) > options.external_data_threshold_bytes:
        files = save_streaming(ir_model, out_dir)   # steps 2, 3, 5 without a protobuf copy of the weights
        del ir_model
        model = onnx.load(str(out_dir / MODEL_FILE), load_external_data=False)
        qreport = None
    else:
        model = ir.to_proto(ir_model)
        del ir_model
        name_dims(model)
        normalize(model)
        qreport = quantize.encode(model, plan) if quantized else None  # step 4
        if qreport is not None and qreport["dynamic_activation_blocks"] != quantize.dynamic_activation_blocks(plan):
            raise ToolchainError("the encoded dynamic-activation blocks differ from the ones the target declares "
                                 "(OnnxTarget.executed_quant)", "E_ONNX_EXPORT")
        files = save(model, out_dir, options)
    check(out_dir)
    cfg = genai_config(spec, MODEL_FILE, programs.config.max_context, gen,
                       share_buffer=fused["attention_blocks_fused"] == f"{spec.num_layers}/{spec.num_layers}")
    (out_dir / "genai_config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    files.append("genai_config.json")
    # genai skips a Digits pre-tokenizer: the package gets the equivalent two-Split form (genai_tokenizer.py)
    tokenizer = {"genai_tokenizer": "Digits + ByteLevel rewritten as Split(digit) + Split(GPT-2 regex) + ByteLevel"} \
        if rewrite_for_genai(out_dir) else {}
    adapters = []
    if lora:
        files.append(lora_inputs.write_adapter(lora, out_dir))
        adapters = [{"name": "adapter", "file": lora_inputs.ADAPTER_FILE, "modules": len(lora) // 2}]
    ops = sorted({f"{n.domain or 'ai.onnx'}::{n.op_type}" for n in model.graph.node})
    return Artifact(
        primary=MODEL_FILE, files=tuple(files), io=io_signature(model),
        kv_cache=KvCacheInfo("io_concat", "float32", ("batch_size", "num_kv_heads", "sequence", "head_dim"),
                             details=freeze({"past_present_share_buffer": False})),
        runtime=RuntimeInfo("onnxruntime", "1.20.0" if qreport is None else quantize.MIN_ORT,
                            freeze({"adapters": adapters} if adapters else {})),
        report=Report.from_json({"opset": options.opset, "node_count": len(model.graph.node), "op_types": ops,
                                 **fused, **tokenizer, **({"quantization": qreport} if qreport is not None else {})}),
    )


def io_signature(model) -> IoSignature:
    return IoSignature(tuple(_sig(v) for v in model.graph.input), tuple(_sig(v) for v in model.graph.output))


def _sig(v) -> TensorSig:
    dtype = onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name
    return TensorSig(v.name, dtype, tuple(d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim))
