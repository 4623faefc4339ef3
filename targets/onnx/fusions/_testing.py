"""Helpers for the tests beside each ONNX fusion: a tiny reference model exported once per session,
fresh copies to rewrite, and onnxruntime runs to compare before / after."""
from __future__ import annotations

import functools

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
from onnx_ir.passes import common as ir_passes

from slmpack.config import TraceConfig
from slmpack.exporter.kv_cache import CacheLayout
from tests.tiny_models import LAYERS, tiny_reference, tiny_spec
from slmpack.exporter.trace import trace_programs
from slmpack.targets.onnx import lower
from slmpack.targets.onnx.options import OnnxOptions

__all__ = ["LAYERS", "exported", "count", "run", "feeds", "max_diff", "tiny_spec"]


@functools.lru_cache(maxsize=None)
def _exported_bytes(kv_heads: int) -> bytes:
    spec = tiny_spec(kv_heads=kv_heads)
    tp = trace_programs(tiny_reference(spec), CacheLayout.IO_CONCAT, TraceConfig(max_context=32, max_prompt=8))
    return ir.to_proto(lower.export(tp, spec, OnnxOptions())).SerializeToString()


def exported(kv_heads: int = 2) -> ir.Model:
    """A fresh (rewritable) copy of the tiny model as torch.onnx exports it, shapes inferred."""
    model = ir.from_proto(onnx.load_from_string(_exported_bytes(kv_heads)))
    ir_passes.ShapeInferencePass()(model)
    return model


def count(model: ir.Model, op_type: str) -> int:
    return sum(1 for n in model.graph if n.op_type == op_type)


def feeds(kv_heads: int = 2, seq: int = 5, past: int = 3, seed: int = 0) -> dict[str, np.ndarray]:
    spec = tiny_spec(kv_heads=kv_heads)
    rng = np.random.default_rng(seed)
    f = {"input_ids": rng.integers(0, spec.vocab_size, (1, seq)).astype(np.int64),
         "attention_mask": np.ones((1, past + seq), np.int64),
         "position_ids": np.arange(past, past + seq, dtype=np.int64)[None]}
    for i in range(spec.num_layers):
        for kv in ("key", "value"):
            f[f"past_key_values.{i}.{kv}"] = rng.standard_normal((1, kv_heads, past, spec.head_dim)).astype(np.float32)
    return f


def run(model: ir.Model, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    proto = ir.to_proto(model)
    onnx.checker.check_model(proto, full_check=True)  # ladder step (a) must still hold
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, inputs)


def max_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    assert len(a) == len(b)
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b))
