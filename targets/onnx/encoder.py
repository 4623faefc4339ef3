"""ONNX lowering of an encoder program -> model.onnx (dynamic batch and sequence).

Steps, in order:
  1. export     torch.onnx.export(dynamo=True) of the traced ExportedProgram; names input_ids,
                attention_mask[, token_type_ids] -> sentence_embedding | last_hidden_state | logits
  2. fuse       onnxscript's ORT transformer fusions (``optimize_for_ort``): SkipLayerNormalization,
                MultiHeadAttention / Attention, BiasGelu / FastGelu; every fusion counted
  3. name_dims  batch_size / sequence_length on the I/O
  4. quantize   (QuantPlan only) the plan's integers encoded natively, as for decoders
                (targets/onnx/quantize.py: int8 weight-only dequantized at load, MatMulNBits for int4
                and for dynamic int8 activations, GatherBlockQuantized embeddings); sites are found
                by value in the fused graph (MultiHeadAttention keeps q/k/v MatMuls outside it)
  5. normalize  strip nondeterministic metadata (the decoder lowering's ``normalize``)
  6. save + check
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import onnx
import torch

from slmpack.errors import ToolchainError
from slmpack.runtime.records import PassResult, passes_to_json
from slmpack.targets.base import Artifact, Report, RuntimeInfo
from slmpack.targets.onnx.lower import MODEL_FILE, check, io_signature, normalize
from slmpack.targets.onnx.options import OnnxOptions

ENCODER_OPSET = 18
ENCODER_OPTIONS = OnnxOptions()
# ORT contrib ops the fusions produce, counted in the manifest's report
FUSED_OPS = ("SkipLayerNormalization", "MultiHeadAttention", "Attention", "BiasGelu", "FastGelu", "Gelu",
             "EmbedLayerNormalization")


def export(programs) -> "onnx_ir.Model":  # noqa: F821
    try:
        prog = torch.onnx.export(programs.program, (), dynamo=True, opset_version=ENCODER_OPSET, optimize=True,
                                 input_names=list(programs.input_names), output_names=[programs.output_name],
                                 verbose=False, report=False)
    except Exception as e:
        raise ToolchainError(f"torch.onnx.export of the encoder failed: {type(e).__name__}: "
                             f"{str(e).splitlines()[0]}", "E_ONNX_EXPORT") from e
    return prog.model


def fuse(model, num_layers: int) -> tuple[object, dict]:
    from onnxscript.rewriter.ort_fusions import optimize_for_ort

    model, passes = optimize_for_ort(model)
    ops = Counter(n.op_type for n in model.graph)
    counts = {op: ops.get(op, 0) for op in FUSED_OPS}
    attn = counts["MultiHeadAttention"] + counts["Attention"]
    return model, {"fusions": counts, "attention_blocks_fused": f"{attn}/{num_layers}",
                   "gelu_fused": f"{counts['BiasGelu'] + counts['FastGelu'] + counts['Gelu']}/{num_layers}",
                   "fusion_passes": passes_to_json(tuple(PassResult(k, int(v)) for k, v in passes.items()))}


def name_dims(model: onnx.ModelProto) -> None:
    for vi in [*model.graph.input, *model.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        if len(dims) >= 1:
            dims[0].dim_param = "batch_size"
        if len(dims) >= 2 and vi.name != "logits" and vi.name != "sentence_embedding":
            dims[1].dim_param = "sequence_length"
    del model.graph.value_info[:]


def lower_encoder(programs, spec, out_dir: Path, plan=None) -> Artifact:
    import onnx_ir as ir

    ir_model = export(programs)
    ir_model, fused = fuse(ir_model, spec.num_layers)
    model = ir.to_proto(ir_model)
    name_dims(model)
    if plan is not None and plan.quantized_names():
        from slmpack.targets.onnx.quantize import encode

        fused["quantization"] = encode(model, plan)
    normalize(model)
    onnx.save_model(model, str(out_dir / MODEL_FILE))
    check(out_dir)
    ops = sorted({f"{n.domain or 'ai.onnx'}::{n.op_type}" for n in model.graph.node})
    return Artifact(primary=MODEL_FILE, files=(MODEL_FILE,), io=io_signature(model), kv_cache=None,
                    runtime=RuntimeInfo("onnxruntime", "1.20.0"),
                    report=Report.from_json({
                        "opset": ENCODER_OPSET, "node_count": len(model.graph.node), "op_types": ops, **fused,
                        "summary": f"fused {fused['attention_blocks_fused']} attention, "
                                   f"{fused['fusions']['SkipLayerNormalization']} SkipLayerNormalization, "
                                   f"{fused['gelu_fused']} GELU"
                                   + (f"; {len(plan.quantized_names())} weights quantized" if plan else "")}))


def check_encoder(pkg_dir: Path, manifest: dict) -> list[str]:
    """onnx.checker full check, and the I/O names the manifest declares."""
    path = Path(pkg_dir) / manifest["artifact"]
    try:
        onnx.checker.check_model(str(path), full_check=True)
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # checker/protobuf errors
        return [f"{path.name}: {str(e).splitlines()[0]}"]
    enc = manifest["encoder"]
    problems = []
    got_in, got_out = [i.name for i in model.graph.input], [o.name for o in model.graph.output]
    if got_in != enc["inputs"]:
        problems.append(f"inputs {got_in} differ from {enc['inputs']}")
    if got_out != [enc["output"]]:
        problems.append(f"outputs {got_out} differ from [{enc['output']}]")
    return problems
