"""Core ML lowering of an encoder program -> model.mlpackage (ML program, iOS 18 / macOS 15), with a
flexible batch and sequence length (``ct.RangeDim``), validated on Linux by the MIL interpreter.

The options are fixed (``ENCODER_OPTIONS``): the encoder flow has no per-target options yet.
* fp32 compute: every tensor of the program is declared fp32. An fp32-typed ML program runs on the
  CPU and GPU in fp32 (coremltools' typed-execution guide; the Neural Engine computes fp16 only;
  fp16 GPU accumulation only if the app opts in with ``allowLowPrecisionAccumulationOnGPU``), and the
  interpreter computes exactly the declared types, so the declared tolerance is the fp32 one
  (runtime/tolerance.py ``COREML_FP32``, as for every fp32 encoder target).
* iOS 18: attention converts to Core ML's fused ``scaled_dot_product_attention`` (counted).
* RangeDim rather than EnumeratedShapes: any batch 1..max_batch and length 2..max_sequence, so the
  runtime pads a batch only to its longest row, as for ONNX. (Enumerated shapes matter for the
  Neural Engine, which an fp32 program does not use.)

Steps, in order:
  1. program    the traced encoder (dynamic batch and sequence), core ATen (the decoder's decompositions)
  2. convert    ct.convert: int32 input_ids / attention_mask [/ token_type_ids] of shape
                [batch 1..max_batch, sequence 2..max_sequence] -> the spec's one output, fp32
  3. passes     fix_select_broadcast (the decoder's; max pooling's ``torch.where``); with a QuantPlan,
                its integers as constexpr_blockwise_shift_scale weights (quantize.apply_plan)
  4. serialize + save + normalize (deterministic bytes), metadata naming the output
  5. describe   I/O read back from the saved package
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from slmpack.errors import ToolchainError
from slmpack.targets.base import Artifact, IoSignature, Report, RuntimeInfo, freeze
from slmpack.targets.coreml import normalize as _normalize
from slmpack.targets.coreml.check import check_program, interpreter_loads
from slmpack.targets.coreml.describe import op_types, signature
from slmpack.targets.coreml.lower import PACKAGE, conversion_state, decompositions, param_names, serialize
from slmpack.targets.coreml.options import CoreMLOptions
from slmpack.targets.coreml.passes import run_pass
from slmpack.targets.coreml.passes.fix_select_broadcast import fix_select_broadcast

ENCODER_OPTIONS = CoreMLOptions(deployment_target="ios18", compute_precision="fp32")
BATCH, SEQUENCE = "batch", "sequence"      # flexible dims, as the manifest's io names them
MIN_SEQUENCE = 2                           # the traced program's bound ([CLS] [SEP])


def convert(programs):
    """(the decomposed ExportedProgram, its MIL program)."""
    if programs.program is None:
        raise ToolchainError("the Core ML encoder lowering needs the traced program", "E_COREML_CONVERT")
    ep = programs.program.run_decompositions(decompositions())
    return ep, _convert(ep, programs)


def _convert(ep, programs):
    import coremltools as ct

    shape = (ct.RangeDim(lower_bound=1, upper_bound=programs.max_batch, default=1, symbol=BATCH),
             ct.RangeDim(lower_bound=MIN_SEQUENCE, upper_bound=programs.max_sequence, default=MIN_SEQUENCE,
                         symbol=SEQUENCE))
    inputs = [ct.TensorType(name=n, shape=shape, dtype=np.int32) for n in programs.input_names]
    with conversion_state():
        try:
            return ct.convert(ep, source="pytorch", convert_to="milinternal", inputs=inputs,
                              outputs=[ct.TensorType(name=programs.output_name, dtype=np.float32)],
                              compute_precision=ct.precision.FLOAT32,
                              minimum_deployment_target=getattr(ct.target, ENCODER_OPTIONS.deployment_target.ct_name))
        except Exception as e:  # coremltools raises ValueError/NotImplementedError/RuntimeError...
            raise ToolchainError(f"coremltools conversion of the encoder failed: {type(e).__name__}: "
                                 f"{str(e).splitlines()[0]}", "E_COREML_CONVERT") from e


def lower_encoder(programs, spec, out_dir: Path, plan=None) -> Artifact:
    ep, prog = convert(programs)
    passes = {"fix_select_broadcast": run_pass(prog, fix_select_broadcast)}
    encoded = None
    if plan is not None and plan.quantized_names():
        from slmpack.targets.coreml.quantize import apply_plan

        encoded = run_pass(prog, apply_plan, plan, param_names(ep), ENCODER_OPTIONS)
        passes["apply_quant_plan"] = len(encoded)
    sdpa = sum(op.op_type == "scaled_dot_product_attention" for op in prog.functions["main"].operations)
    model = serialize(prog, ENCODER_OPTIONS)
    path = Path(out_dir) / PACKAGE
    model.save(str(path))
    metadata = {"slmpack.architecture": spec.architecture, "slmpack.encoder.output": programs.output_name,
                "slmpack.compute_precision": ENCODER_OPTIONS.compute_precision.value}
    if encoded is not None:
        import json

        from slmpack.targets.coreml.quantize import META_KEY

        metadata[META_KEY] = json.dumps(encoded, sort_keys=True)
    files = _normalize.normalize(path, metadata)
    o = ENCODER_OPTIONS
    return Artifact(
        primary=PACKAGE, files=tuple(f"{PACKAGE}/{f}" for f in files),
        io=IoSignature.from_json(signature(path, (BATCH, SEQUENCE))), kv_cache=None,
        runtime=RuntimeInfo("coreml", o.deployment_target.runtime_label, freeze({
            "deployment_target": o.deployment_target.value, "compute_units": o.compute_units.value,
            "compute_precision": o.compute_precision.value, "specification_version": o.deployment_target.level})),
        report=Report.from_json({
            "passes": passes, "op_types": op_types(path), "precision": "fp32",
            **({"quantization": encoded} if encoded else {}),
            "attention_blocks_fused": f"{sdpa}/{spec.num_layers}",
            "summary": f"flexible batch 1..{programs.max_batch} and sequence {MIN_SEQUENCE}..{programs.max_sequence} "
                       f"(RangeDim), fp32 compute, {sdpa}/{spec.num_layers} attention blocks as "
                       "scaled_dot_product_attention"}))


def check_encoder(pkg_dir: Path, manifest: dict) -> list[str]:
    """The decoder check's program steps (parse, specification version, ops at the deployment target,
    the interpreter loads it), and the I/O the manifest declares."""
    package = Path(pkg_dir) / manifest["artifact"]
    program = check_program(package, manifest.get("runtime", {}))
    if not program.readable:
        return list(program.problems)
    problems = list(program.problems)
    got, want = signature(package, (BATCH, SEQUENCE)), manifest.get("io", {})
    for part in ("inputs", "outputs", "states"):
        if got[part] != want.get(part, []):
            problems.append(f"{part} differ from the manifest: package {got[part]} vs manifest {want.get(part)}")
    enc = manifest["encoder"]
    if [f["name"] for f in got["inputs"]] != enc["inputs"]:
        problems.append(f"inputs {[f['name'] for f in got['inputs']]} differ from {enc['inputs']}")
    if [f["name"] for f in got["outputs"]] != [enc["output"]]:
        problems.append(f"outputs {[f['name'] for f in got['outputs']]} differ from [{enc['output']}]")
    return problems + interpreter_loads(package)
