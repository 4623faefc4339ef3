"""Run an encoder package: tokenize with the package's tokenizer.json, pad + mask, run the artifact
through its format's runtime, return embeddings / labels. Python stdlib + numpy + tokenizers + the
format's runtime (onnxruntime, executorch, ai-edge-litert, Core ML or our numpy MIL interpreter) — no slmpack
exporter, no transformers. Hook for ``slmpack.load``: ``open_encoder(pkg_dir, manifest)``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from .errors import BadInputError


class EncoderBackend(Protocol):
    """One forward pass: int64 [B, S] arrays (token_type_ids None when the model has none) -> output."""

    lengths: tuple[int, ...] | None   # fixed sequence lengths the artifact accepts (None: any length);
                                      # with fixed lengths the backend pads (and masks) to the next one
    runtime_name: str                 # the runtime that runs the artifact, and its version (reports)
    runtime_version: str

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray | None) -> np.ndarray: ...


@dataclass(frozen=True)
class Batch:
    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray | None


def tokenize(tokenizer, texts: list[str], max_len: int, pad_id: int, with_types: bool,
             pad_to: int | None = None) -> Batch:
    """Encode (truncated to ``max_len``), pad right to the longest row (or ``pad_to``), mask padding."""
    encs = tokenizer.encode_batch(list(texts))
    width = pad_to or max(2, max(min(len(e.ids), max_len) for e in encs))
    ids = np.full((len(encs), width), pad_id, np.int64)
    mask = np.zeros((len(encs), width), np.int64)
    types = np.zeros((len(encs), width), np.int64)
    for i, e in enumerate(encs):
        n = min(len(e.ids), max_len, width)
        ids[i, :n], mask[i, :n], types[i, :n] = e.ids[:n], 1, e.type_ids[:n]
    return Batch(ids, mask, types if with_types else None)


def length_order(tokenizer, texts: list[str]) -> list[int]:
    """Indices of ``texts`` by token count (stable), so batches hold rows of similar length."""
    lengths = [len(e.ids) for e in tokenizer.encode_batch(list(texts))]
    return sorted(range(len(texts)), key=lambda i: lengths[i])


def load_tokenizer(pkg_dir: Path, max_len: int):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(pkg_dir) / "tokenizer.json"))
    tok.no_padding()  # tokenize() pads; truncation keeps the post-processor's [CLS] ... [SEP]
    tok.enable_truncation(max_length=max_len)
    return tok


class EncoderPackage:
    """What ``slmpack.load(PKG)`` returns for an encoder package."""

    def __init__(self, pkg_dir: Path, manifest: dict, backend: EncoderBackend):
        self.path, self.manifest, self.backend = Path(pkg_dir), manifest, backend
        self.identity: str | None = None   # set by slmpack.load (sha256 of the canonical manifest)
        enc = manifest["encoder"]
        self.output, self.max_sequence = enc["output"], int(enc["max_sequence"])
        self.max_batch = int(enc.get("max_batch") or 1024)
        self.id2label = list(enc.get("id2label") or [])
        self.with_types = "token_type_ids" in enc["inputs"]
        self.pad_id = int(manifest["model"]["pad_token_id"])
        self.tokenizer = load_tokenizer(self.path, self.max_sequence)

    def _pad_to(self, batch_texts: list[str]) -> int | None:
        lengths = self.backend.lengths
        if lengths is None:
            return None
        longest = max(min(len(e.ids), self.max_sequence) for e in self.tokenizer.encode_batch(batch_texts))
        return next(n for n in lengths if n >= longest)  # smallest signature that holds the batch

    def run(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """The package's output for every text: [N, D] embeddings, [N, L] logits, or (last_hidden_state)
        a list of [S_i, D] arrays (padding removed). Rows are batched by length (less padding) and
        returned in input order."""
        texts = list(texts)
        batch_size = min(batch_size, self.max_batch)
        order = length_order(self.tokenizer, texts)
        outs: list = [None] * len(texts)
        for start in range(0, len(texts), batch_size):
            idx = order[start:start + batch_size]
            chunk = [texts[i] for i in idx]
            b = tokenize(self.tokenizer, chunk, self.max_sequence, self.pad_id, self.with_types, self._pad_to(chunk))
            y = self.backend.run(b.input_ids, b.attention_mask, b.token_type_ids)
            for j, i in enumerate(idx):
                outs[i] = y[j, : int(b.attention_mask[j].sum())] if self.output == "last_hidden_state" else y[j]
        return outs if self.output == "last_hidden_state" else np.stack(outs)

    def embed(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        if self.output != "sentence_embedding":
            raise BadInputError(f"{self.path}: this package outputs {self.output}, not sentence_embedding",
                                "E_ENCODER_OUTPUT")
        return self.run(texts, batch_size)

    def classify(self, texts: list[str], batch_size: int = 32) -> list[str]:
        if self.output != "logits":
            raise BadInputError(f"{self.path}: this package outputs {self.output}, not classification logits",
                                "E_ENCODER_OUTPUT")
        return [self.id2label[int(i)] for i in self.run(texts, batch_size).argmax(-1)]


class OnnxBackend:
    lengths = None
    runtime_name = "onnxruntime"

    def __init__(self, pkg_dir: Path, manifest: dict, threads: int = 0):
        import onnxruntime as ort

        self.runtime_version = ort.__version__

        so = ort.SessionOptions()
        so.log_severity_level = 3
        if threads:
            so.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(Path(pkg_dir) / manifest["artifact"]), so,
                                            providers=["CPUExecutionProvider"])
        self.names = manifest["encoder"]["inputs"]

    def run(self, input_ids, attention_mask, token_type_ids):
        feeds = dict(zip(self.names, (input_ids, attention_mask, token_type_ids)))
        return self.session.run(None, feeds)[0]


class ExecuTorchBackend:
    """model.pte: one static batch-1 method per length (``encode_<n>``); rows padded to the smallest
    that holds the batch. Through executorch.runtime (its Python bindings take torch tensors), or
    the torch-free ``libslm_et.so`` when ``SLMPACK_ET_LIB`` names it (``native_et.py``)."""

    runtime_name = "executorch"

    def __init__(self, pkg_dir: Path, manifest: dict, threads: int = 0):
        from . import native_et

        path = Path(pkg_dir) / manifest["artifact"]
        self.lengths = tuple(int(n) for n in manifest["io"]["lengths"])
        self._methods: dict = {}
        self.pad_id = int(manifest["model"]["pad_token_id"])
        self.native = native_et.NativeProgram(path) if native_et.selected() else None
        if self.native is not None:
            self.runtime_version = self.native.version
            return
        from executorch.runtime import Runtime, Verification

        from .adapters.base import runtime_version

        self.runtime_version = runtime_version("executorch")
        self.program = Runtime.get().load_program(path.read_bytes(), verification=Verification.InternalConsistency)

    def _row(self, n: int, arrays) -> np.ndarray:
        if self.native is not None:
            return self.native.run(f"encode_{n}", arrays)[0].copy()
        import torch

        if n not in self._methods:
            self._methods[n] = self.program.load_method(f"encode_{n}")
        return self._methods[n].execute([torch.from_numpy(a) for a in arrays])[0].numpy()[0].copy()

    def run(self, input_ids, attention_mask, token_type_ids):
        return run_rows(self.lengths, self.pad_id, self._row, input_ids, attention_mask, token_type_ids,
                        np.int64)


def run_rows(lengths, pad_id: int, run_one, input_ids, attention_mask, token_type_ids, dtype) -> np.ndarray:
    """Fixed-length, batch-1 artifacts: pad each row to the smallest length that holds the batch's
    width (pad id, mask 0, type 0), run it, and crop a per-token output back to the width."""
    width = input_ids.shape[1]
    n = next((L for L in lengths if L >= width), None)
    if n is None:
        raise BadInputError(f"sequence of {width} exceeds the longest signature ({lengths[-1]})",
                            "E_SEQUENCE_TOO_LONG")
    rows = []
    for i in range(input_ids.shape[0]):
        arrays = []
        for a, fill in ((input_ids, pad_id), (attention_mask, 0), (token_type_ids, 0)):
            if a is None:
                continue
            row = np.full((1, n), fill, dtype)
            row[0, :width] = a[i]
            arrays.append(row)
        rows.append(run_one(n, arrays))
    y = np.stack(rows)
    return y[:, :width] if y.ndim == 3 else y


class LiteRTBackend:
    """model.tflite: one fixed-length, batch-1 signature per length (``encode_<n>``). Each row is padded
    to the smallest signature that holds the batch's width (pad id, mask 0) and run on its own."""

    def __init__(self, pkg_dir: Path, manifest: dict, threads: int = 0):
        from .adapters.base import runtime_version
        from .adapters.tflite import interpreter_module, load_interpreter  # ai_edge_litert, else tflite_runtime

        _, self.runtime_name = interpreter_module()
        self.runtime_version = runtime_version(self.runtime_name)
        self._data = (Path(pkg_dir) / manifest["artifact"]).read_bytes()  # the interpreter keeps a view
        self.interpreter = load_interpreter(self._data, threads)  # the kit's flatbuffer verifier first
        self.lengths = tuple(int(n) for n in manifest["io"]["lengths"])
        self._runners = {n: self.interpreter.get_signature_runner(f"encode_{n}") for n in self.lengths}
        self.pad_id = int(manifest["model"]["pad_token_id"])
        self.names = manifest["encoder"]["inputs"]

    def _row(self, n: int, arrays) -> np.ndarray:
        out = self._runners[n](**dict(zip(self.names, arrays)))
        return next(iter(out.values()))[0]

    def run(self, input_ids, attention_mask, token_type_ids):
        return run_rows(self.lengths, self.pad_id, self._row, input_ids, attention_mask, token_type_ids,
                        np.int32)


class CoreMLBackend:
    """model.mlpackage with a flexible batch and sequence: Core ML on macOS, the kit's MIL interpreter
    elsewhere (``adapters/coreml.py`` picks; ``SLMPACK_COREML_RUNNER`` overrides). int32 token inputs."""

    lengths = None

    def __init__(self, pkg_dir: Path, manifest: dict, threads: int = 0):
        from .adapters.base import runtime_version
        from .adapters.coreml import open_predictor

        self.runtime_name, self.runtime_version = "coreml", runtime_version("coremltools")

        self.predict = open_predictor(Path(pkg_dir) / manifest["artifact"],
                                      str(manifest["runtime"].get("compute_units", "all")))
        self.names, self.output = manifest["encoder"]["inputs"], manifest["encoder"]["output"]

    def run(self, input_ids, attention_mask, token_type_ids):
        feeds = {n: np.asarray(a, np.int32) for n, a in zip(self.names, (input_ids, attention_mask, token_type_ids))}
        return np.asarray(self.predict(feeds)[self.output], np.float32)


# target name -> backend factory (pkg_dir, manifest, threads); explicit, each imports only its own runtime
BACKENDS: dict[str, Callable[..., EncoderBackend]] = {"onnx": OnnxBackend, "executorch": ExecuTorchBackend,
                                                                  "tflite": LiteRTBackend, "coreml": CoreMLBackend}


def register_backend(target: str, factory: Callable[..., EncoderBackend]) -> None:
    if target in BACKENDS:
        raise ValueError(f"encoder backend {target} is already registered")
    BACKENDS[target] = factory


def is_encoder_manifest(manifest: dict) -> bool:
    return "encoder" in manifest


def open_backend(pkg_dir: Path, manifest: dict, threads: int = 0) -> EncoderBackend:
    """The artifact's backend alone (no tokenizer): what the on-device runner feeds the test vectors."""
    target = manifest["target"]
    if target not in BACKENDS:
        raise BadInputError(f"{pkg_dir}: no encoder runtime for target {target}", "E_TARGET_UNAVAILABLE")
    return BACKENDS[target](Path(pkg_dir), manifest, threads)


def open_encoder(pkg_dir: Path, manifest: dict | None = None, threads: int = 0) -> EncoderPackage:
    pkg_dir = Path(pkg_dir)
    manifest = manifest or json.loads((pkg_dir / "manifest.json").read_text(encoding="utf-8"))
    return EncoderPackage(pkg_dir, manifest, open_backend(pkg_dir, manifest, threads))
