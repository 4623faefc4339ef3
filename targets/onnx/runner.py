"""Runner over onnxruntime for io_concat packages (GenAI I/O names)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from slmpack.errors import BadInputError
from slmpack.targets.onnx.names import input_names


class OnnxRunner:
    def __init__(self, model_path: Path, num_layers: int, num_kv_heads: int, head_dim: int,
                 max_context: int, threads: int = 0):
        import onnxruntime as ort

        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = threads
        so.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])
        except Exception as e:  # ORT raises its own exception types (Fail, InvalidGraph, ...)
            raise BadInputError(f"onnxruntime cannot load {model_path.name}: {str(e).splitlines()[0]}",
                                "E_ARTIFACT_INVALID") from e
        self.layers, self.kvh, self.hd = num_layers, num_kv_heads, head_dim
        self.max_prompt = max_context
        self.max_context = max_context
        self._names = input_names(num_layers)
        self.reset()

    def reset(self) -> None:
        empty = np.zeros((1, self.kvh, 0, self.hd), np.float32)
        self.past = [empty] * (2 * self.layers)
        self.pos = 0

    def _run(self, ids: np.ndarray) -> np.ndarray:
        s = ids.shape[0]
        if self.pos + s > self.max_context:
            raise BadInputError(f"sequence of {self.pos + s} exceeds max context {self.max_context}",
                                "E_CONTEXT_OVERFLOW")
        feeds = {
            "input_ids": ids.astype(np.int64)[None],
            "attention_mask": np.ones((1, self.pos + s), np.int64),
            "position_ids": np.arange(self.pos, self.pos + s, dtype=np.int64)[None],
        }
        feeds.update(zip(self._names[3:], self.past))
        out = self.session.run(None, feeds)
        self.past = out[1:]
        self.pos += s
        return out[0][0]

    def prefill(self, ids: np.ndarray) -> np.ndarray:
        return self._run(np.asarray(ids))

    def decode(self, token: int, pos: int) -> np.ndarray:
        if pos != self.pos:
            raise BadInputError(f"decode at position {pos}, cache holds {self.pos}", "E_RUNNER_POSITION")
        return self._run(np.array([token]))[0]
