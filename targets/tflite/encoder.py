"""LiteRT lowering of an encoder -> model.tflite with one fixed-length signature per sequence length.

LiteRT signatures have static shapes, so the model carries ``encode_<n>`` for n in 32 / 128 / 256 /
512 (those below the model's max_sequence, plus max_sequence itself), batch 1, int32 token inputs.
The runtime (slmpack/runtime/encoder.py) picks the smallest signature that holds a text, pads with
the pad id and masks the padding.

Steps, in order:
  1. wrap      positional (input_ids, attention_mask[, token_type_ids]) module for sample kwargs
  2. convert   litert-torch Converter, one signature per length
  3. save + check  LiteRT's interpreter loads it; the signature set is as designed
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from slmpack.errors import SlmpackError, ToolchainError
from slmpack.targets.base import Artifact, IoSignature, Report, RuntimeInfo
from slmpack.targets.tflite.options import TFLiteOptions

MODEL_FILE = "model.tflite"
LENGTHS = (32, 128, 256, 512)
ENCODER_OPTIONS = TFLiteOptions()


def signature_lengths(max_sequence: int) -> tuple[int, ...]:
    return tuple(sorted({n for n in LENGTHS if n < max_sequence} | {max_sequence}))


def signature_name(n: int) -> str:
    return f"encode_{n}"


class _WithTypes(nn.Module):
    def __init__(self, ref):
        super().__init__()
        self.ref = ref

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.ref(input_ids, attention_mask, token_type_ids)


class _NoTypes(nn.Module):
    def __init__(self, ref):
        super().__init__()
        self.ref = ref

    def forward(self, input_ids, attention_mask):
        return self.ref(input_ids, attention_mask)


def sample_kwargs(names: tuple[str, ...], n: int, vocab: int) -> dict:
    ids = (torch.arange(n, dtype=torch.int32) % (vocab - 1) + 1)[None]
    out = {"input_ids": ids, "attention_mask": torch.ones(1, n, dtype=torch.int32)}
    if "token_type_ids" in names:
        out["token_type_ids"] = torch.zeros(1, n, dtype=torch.int32)
    return out


def lower_encoder(programs, spec, out_dir: Path, plan=None) -> Artifact:
    """``plan``: always None or float-only here; quantized LiteRT encoders are refused in preflight
    (exporter/encoder/quant.py ``TFLITE_FOLDED``)."""
    import litert_torch

    from slmpack.targets.tflite.lower import _quiet_litert_torch
    from slmpack.targets.tflite.runner import load_interpreter

    ref = programs.module.ref
    module = (_WithTypes(ref) if "token_type_ids" in programs.input_names else _NoTypes(ref)).eval()
    lengths = signature_lengths(programs.max_sequence)
    converter = litert_torch.Converter()
    for n in lengths:
        converter.signature(signature_name(n), module, sample_kwargs=sample_kwargs(programs.input_names, n,
                                                                                     spec.vocab_size))
    try:
        with _quiet_litert_torch(), torch.no_grad():
            data = bytes(converter.convert(strict_export=False).model_content())
    except SlmpackError:
        raise
    except Exception as e:  # litert-torch / MLIR raise many types; one line, keep the cause
        raise ToolchainError(f"litert-torch conversion of the encoder failed: {type(e).__name__}: "
                             f"{str(e).splitlines()[0]}", "E_TFLITE_CONVERT") from e
    (out_dir / MODEL_FILE).write_bytes(data)
    sigs = load_interpreter(data).get_signature_list()
    return Artifact(
        primary=MODEL_FILE, files=(MODEL_FILE,),
        io=IoSignature.from_json({"signatures": {k: {"inputs": sorted(v["inputs"]), "outputs": sorted(v["outputs"])}
                           for k, v in sorted(sigs.items())},
            "lengths": list(lengths), "batch": 1, "token_dtype": "int32"}),
        kv_cache=None, runtime=RuntimeInfo("ai-edge-litert", "2.0.0"),
        report=Report.from_json({"signatures": len(lengths), "tflite_bytes": len(data),
                "summary": f"{len(lengths)} fixed-length signatures ({', '.join(map(str, lengths))}), batch 1; "
                           "the runtime pads to the smallest that fits and masks the padding"}))


def check_encoder(pkg_dir: Path, manifest: dict) -> list[str]:
    from slmpack.targets.tflite.runner import load_interpreter

    try:
        sigs = load_interpreter((Path(pkg_dir) / manifest["artifact"]).read_bytes()).get_signature_list()
    except SlmpackError as e:
        return [str(e)]
    want = {signature_name(n) for n in manifest["io"]["lengths"]}
    problems = [] if set(sigs) == want else [f"signatures {sorted(sigs)} differ from {sorted(want)}"]
    for k in sorted(want & set(sigs)):
        if sorted(sigs[k]["inputs"]) != sorted(manifest["encoder"]["inputs"]):
            problems.append(f"{k}: inputs {sorted(sigs[k]['inputs'])} differ from {manifest['encoder']['inputs']}")
    return problems
