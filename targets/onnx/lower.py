"""ONNX lowering pipeline: traced io_concat program -> model.onnx + genai_config.json.

The steps, in order (each a small function below):
  1. export      torch.onnx.export(dynamo=True) of the traced ExportedProgram, GenAI I/O names
  2. name_dims   symbolic dims renamed to sequence_length / past_sequence_length / total_sequence_length
  3. normalize   strip nondeterministic metadata (doc strings, producer build info)
  4. save        one file, or model.onnx + model.onnx.data past the size threshold
  5. check       onnx.checker.check_model(full_check=True)
  6. genai       genai_config.json for onnxruntime-genai
"""
from __future__ import annotations

import json
from pathlib import Path

import onnx
import torch

from slmpack.errors import ToolchainError
from slmpack.targets.base import Artifact
from slmpack.targets.onnx import names
from slmpack.targets.onnx.genai_config import genai_config
from slmpack.targets.onnx.options import OnnxOptions

MODEL_FILE, DATA_FILE = "model.onnx", "model.onnx.data"


def export(programs, spec, options: OnnxOptions) -> onnx.ModelProto:
    try:
        prog = torch.onnx.export(
            programs.prefill, (), dynamo=True, opset_version=options.opset, optimize=options.optimize,
            input_names=names.input_names(spec.num_layers), output_names=names.output_names(spec.num_layers),
            verbose=False, report=False)
    except Exception as e:
        raise ToolchainError(f"torch.onnx.export failed: {type(e).__name__}: {str(e).splitlines()[0]}",
                             "E_ONNX_EXPORT") from e
    return prog.model_proto


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


def check(out_dir: Path) -> None:
    try:
        onnx.checker.check_model(str(out_dir / MODEL_FILE), full_check=True)
    except onnx.checker.ValidationError as e:
        raise ToolchainError(f"onnx.checker rejected the model: {str(e).splitlines()[0]}", "E_ONNX_CHECK") from e


def lower(programs, spec, options: OnnxOptions, out_dir: Path, gen: dict, plan=None) -> Artifact:
    model = export(programs, spec, options)
    name_dims(model)
    normalize(model)
    files = save(model, out_dir, options)
    check(out_dir)
    cfg = genai_config(spec, MODEL_FILE, programs.config.max_context, gen)
    (out_dir / "genai_config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    files.append("genai_config.json")
    ops = sorted({f"{n.domain or 'ai.onnx'}::{n.op_type}" for n in model.graph.node})
    io = {
        "inputs": [_vi(v) for v in model.graph.input],
        "outputs": [_vi(v) for v in model.graph.output],
    }
    return Artifact(
        primary=MODEL_FILE, files=files, io=io,
        kv_cache={"layout": "io_concat", "dtype": "float32",
                  "shape": ["batch_size", "num_kv_heads", "sequence", "head_dim"],
                  "past_present_share_buffer": False},
        runtime={"name": "onnxruntime", "min_version": "1.20.0"},
        report={"opset": options.opset, "node_count": len(model.graph.node), "op_types": ops},
    )


def _vi(v) -> dict:
    dtype = onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name
    shape = [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
    return {"name": v.name, "dtype": dtype, "shape": shape}
