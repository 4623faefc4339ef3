"""One atheris harness per parser; run as ``python -m bench.fuzz.harness TARGET [libFuzzer flags]``.

A crash is any exception that is not a typed ``SlmpackError`` (or a hang past -timeout).
Targets: safetensors (header + tensors), manifest (read_manifest + verify), config
(JSON parse + value checks + ModelSpec), tflite (the pure-Python flatbuffer verifier).
"""
from __future__ import annotations

import json
import os
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
    from slmpack.targets.tflite.verify import verify_bytes

WORK = Path(tempfile.mkdtemp(prefix="slmpack-fuzz-"))


def fuzz_safetensors(data: bytes) -> None:
    path = WORK / "w.safetensors"
    path.write_bytes(data)
    with open(path, "rb") as f:
        load_tensors(f, "w.safetensors")


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
        return [json.dumps({"schema_version": 1, "target": "onnx", "files": {}}).encode()]
    if target == "config":
        return [json.dumps({"architectures": ["LlamaForCausalLM"], "vocab_size": 96, "hidden_size": 32,
                            "intermediate_size": 72, "num_hidden_layers": 2, "num_attention_heads": 4,
                            "rms_norm_eps": 1e-5, "rope_parameters": {"rope_type": "llama3", "factor": 8.0,
                                                                      "rope_theta": 5e5}}).encode()]
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
    atheris.Fuzz()


if __name__ == "__main__":
    main()
