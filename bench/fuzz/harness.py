"""One atheris harness per parser; run as ``python -m bench.fuzz.harness TARGET [libFuzzer flags]``.

A crash is any exception that is not a typed ``SlmpackError`` (or a hang past -timeout).
Targets: safetensors (the exporter's streaming reader and the device runner's reader, same input),
manifest (read_manifest + verify), config (JSON parse + value checks + ModelSpec), tflite (the
runtime kit's pure-Python flatbuffer verifier).

Exit: atheris implements ``-timeout`` with a periodic ``ITIMER_REAL`` (every timeout/2+1 s) and a
Python-level SIGALRM handler, and ends a finished run by raising ``SystemExit`` out of
``atheris.Fuzz()``. Python's finalization resets every signal that has a Python handler to SIG_DFL
(``_PySignal_Fini``) before it tears down the modules, so a tick landing in that teardown (torch
and numpy make it take about a second) killed finished runs with SIGALRM (-14) after "Done N".
``main`` therefore cancels the timer as soon as ``Fuzz()`` unwinds; a real timeout never unwinds
(libFuzzer's handler reports it and exits from inside the signal).
"""
from __future__ import annotations

import json
import shutil
import signal
import struct
import sys
import tempfile
from pathlib import Path

import atheris
import numpy  # noqa: F401  (third-party imports first: only slmpack's code is instrumented)
import torch  # noqa: F401

with atheris.instrument_imports(include=["slmpack"]):
    from slmpack.errors import SlmpackError
    from slmpack.confine import parse_json
    from slmpack.exporter.config_checks import check_config
    from slmpack.exporter.safetensors_reader import load_tensors
    from slmpack.exporter.spec import spec_from_config
    from slmpack.package import read_manifest, verify
    from slmpack.runtime import integrity  # noqa: F401  (package.verify imports the kit's manifest reader lazily)
    from slmpack.runtime import safetensors as runtime_safetensors
    from slmpack.runtime.tflite_verify import verify_bytes

WORK = Path(tempfile.mkdtemp(prefix="slmpack-fuzz-"))
ROOT = Path(__file__).resolve().parents[2]
SHA = "ab" * 32
# A manifest every check accepts (until verify finds its files missing): the seed that lets the
# fuzzer reach the typed per-field validation instead of stopping at the first missing field.
VALID_MANIFEST = {
    "schema_version": 1, "target": "tflite", "artifact": "model.tflite", "precision": "int8",
    "source": {"checkpoint_sha256": SHA, "architecture": "Qwen2ForCausalLM", "model_dir_name": "m"},
    "model": {"vocab_size": 64, "hidden_size": 32, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2,
              "head_dim": 8, "max_context": 32, "max_prompt": 16, "num_parameters": 1000, "eos_token_ids": [2],
              "family": "qwen2"},
    "io": {"signatures": {"decode": {"inputs": [], "outputs": []}}, "prefill_lengths": [8, 16]},
    "kv_cache": {"layout": "io_static", "dtype": "float32", "shape": ["batch", 2, 32, 8], "max_context": 32},
    "runtime": {"name": "ai-edge-litert", "min_version": "2.3.0", "litert_lm": {"file": "model.litertlm"}},
    "tolerance": {"atol": 1e-4, "rtol": 0.0, "min_top1": 0.99, "greedy_exact": False},
    "toolchain": {"torch": "2.13.0"}, "tokenizer": {"files": ["tokenizer.json"]},
    "test_vectors": {"file": "test_vectors.safetensors", "prompt": "Return the", "reference": "fake_quant",
                     "eval_text": None},
    "quantization": {"plan": "quant_plan.json", "plan_sha256": SHA, "recipe_file": "quant_recipe.json",
                     "recipe": "int8", "readback_passed": True},
    "report": {"precision": "int8", "op_types": ["ADD"],
               "fusion_passes": {"fuse_sdpa": {"applied": 2, "declined": [{"where": "layer 1", "reason": "x"}]}}},
    "files": {n: SHA for n in ("model.tflite", "model.litertlm", "tokenizer.json", "test_vectors.safetensors",
                               "quant_recipe.json")},
    "validation": {"passed": True, "mode": "quantized",
                   **{s: {"passed": True} for s in ("structural", "vectors", "heldout", "greedy")}},
}


def fuzz_safetensors(data: bytes) -> None:
    path = WORK / "w.safetensors"
    path.write_bytes(data)
    try:
        with open(path, "rb") as f:
            load_tensors(f, "w.safetensors")
    except SlmpackError:
        pass  # typed refusal: the device runner's reader still gets the same bytes
    runtime_safetensors.loads(data, "w.safetensors")


def fuzz_manifest(data: bytes) -> None:
    (WORK / "manifest.json").write_bytes(data)
    read_manifest(WORK)
    verify(WORK)


def fuzz_config(data: bytes) -> None:
    cfg = parse_json(data, "config.json")
    if isinstance(cfg, dict):
        check_config(cfg)
        spec = spec_from_config(cfg)
        if spec.head_dim <= 4096:
            spec.rope.inv_freq_and_scale(spec.head_dim, spec.max_position_embeddings)


def fuzz_tflite(data: bytes) -> None:
    verify_bytes(data)


TARGETS = {"safetensors": fuzz_safetensors, "manifest": fuzz_manifest, "config": fuzz_config,
           "tflite": fuzz_tflite}


def seeds(target: str) -> list[bytes]:
    if target == "safetensors":
        header = json.dumps({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
        return [struct.pack("<Q", len(header)) + header + b"\0" * 8]
    if target == "manifest":
        return [json.dumps({"schema_version": 1, "target": "onnx", "files": {}}).encode(),
                json.dumps(VALID_MANIFEST).encode()]
    if target == "config":
        return [json.dumps({"architectures": ["LlamaForCausalLM"], "vocab_size": 96, "hidden_size": 32,
                            "intermediate_size": 72, "num_hidden_layers": 2, "num_attention_heads": 4,
                            "rms_norm_eps": 1e-5, "max_position_embeddings": 256,
                            "rope_parameters": {"rope_type": "llama3", "factor": 8.0, "rope_theta": 5e5,
                                                "original_max_position_embeddings": 64}}).encode(),
                (ROOT / "slmpack" / "demo_model" / "config.json").read_bytes()]
    return [b"\x18\0\0\0TFL3" + b"\0" * 40]


def main() -> None:
    target = sys.argv.pop(1)
    fn = TARGETS[target]

    def one(data: bytes) -> None:
        try:
            fn(data)
        except SlmpackError:
            pass

    corpus = WORK / "seeds"
    corpus.mkdir()
    for i, s in enumerate(seeds(target)):
        (corpus / f"seed{i}").write_bytes(s)
    atheris.Setup(sys.argv + [str(corpus)], one)
    try:
        atheris.Fuzz()
    finally:  # see the module docstring: no SIGALRM may reach the interpreter's teardown
        signal.setitimer(signal.ITIMER_REAL, 0)
        shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
