"""ONNX Runtime adapter: onnxruntime-genai I/O names (input_ids, attention_mask, position_ids,
past_key_values.{i}.key/value -> logits, present.{i}.key/value), KV cache concatenated by ORT."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import BadInputError, ErrorCode
from ..manifest import Manifest
from .base import Positions

_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
          "tensor(int32)": np.int32}


class OnnxAdapter(Positions):
    """``lora``: an ``.onnx_adapter`` file of the package, active on every run (separate adapters)."""

    def __init__(self, pkg: Path, manifest: Manifest, threads: int = 0, lora: str | None = None):
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BadInputError(f"onnxruntime is not importable: {exc}", ErrorCode.E_RUNTIME_MISSING) from None
        m = manifest.model
        super().__init__(m.max_context, m.max_context)
        self.runtime_name, self.runtime_version = "onnxruntime", ort.__version__
        so = ort.SessionOptions()
        so.log_severity_level = 3
        if threads:
            so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        path = Path(pkg) / manifest.artifact
        try:
            self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - ORT raises its own types (Fail, InvalidGraph, ...)
            raise BadInputError(f"onnxruntime cannot load {path.name}: {str(exc).splitlines()[0]}",
                                ErrorCode.E_ARTIFACT_INVALID) from None
        self.run_options = None
        if lora is not None:
            adapter = ort.LoraAdapter()
            try:
                adapter.Load(str(Path(pkg) / lora))
            except Exception as exc:  # noqa: BLE001 - ORT's own error types
                raise BadInputError(f"onnxruntime cannot load the adapter {lora}: {str(exc).splitlines()[0]}",
                                    ErrorCode.E_ARTIFACT_INVALID) from None
            self.run_options = ort.RunOptions()
            self.run_options.add_active_adapter(adapter)
            self.lora = adapter   # RunOptions holds a raw pointer: the adapter must outlive it
        self.inputs = {i.name: _TYPES.get(i.type, np.float32) for i in self.session.get_inputs()}
        self.outputs = [o.name for o in self.session.get_outputs()]
        if "input_ids" not in self.inputs or "logits" not in self.outputs:
            raise BadInputError(f"{path.name} lacks input_ids/logits (onnxruntime-genai naming)",
                                ErrorCode.E_ARTIFACT_INVALID)
        self.layers = sum(1 for n in self.inputs if n.startswith("past_key_values.") and n.endswith(".key"))
        self.kv_shape = (1, m.num_kv_heads, 0, m.head_dim)
        self.kv_dtype = self.inputs.get("past_key_values.0.key", np.float32)
        self.reset()

    def reset(self) -> None:
        empty = np.zeros(self.kv_shape, dtype=self.kv_dtype)
        self.past = [(empty, empty)] * self.layers
        self.pos = 0

    def _step(self, ids: np.ndarray) -> np.ndarray:
        n = len(ids)
        self.check_chunk(n)
        feeds = {"input_ids": np.asarray(ids, dtype=self.inputs["input_ids"])[None]}
        if "attention_mask" in self.inputs:
            feeds["attention_mask"] = np.ones((1, self.pos + n), dtype=self.inputs["attention_mask"])
        if "position_ids" in self.inputs:
            feeds["position_ids"] = np.arange(self.pos, self.pos + n, dtype=self.inputs["position_ids"])[None]
        for i, (k, v) in enumerate(self.past):
            feeds[f"past_key_values.{i}.key"], feeds[f"past_key_values.{i}.value"] = k, v
        out = dict(zip(self.outputs, self.session.run(None, feeds, self.run_options)))
        self.past = [(out[f"present.{i}.key"], out[f"present.{i}.value"]) for i in range(self.layers)]
        self.pos += n
        return np.asarray(out["logits"][0], dtype=np.float32)

    def prefill(self, ids) -> np.ndarray:
        return self._step(np.asarray(ids, dtype=np.int64))

    def decode(self, token: int, pos: int) -> np.ndarray:
        self.check_decode(pos)
        return self._step(np.array([int(token)], dtype=np.int64))[0]
