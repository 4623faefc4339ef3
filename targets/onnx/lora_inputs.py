"""Separate LoRA adapters on ONNX: the traced LoRA buffers (``...q_proj.lora_A`` [in, r] and
``...lora_B`` [r, out], scale folded into B) become graph inputs whose default initializers are
empty ([in, 0], [0, out]: the branch adds zeros, the base model runs), and their values go to
``adapter.onnx_adapter`` in onnxruntime's adapter format. onnxruntime-genai
(``og.Adapters(model).load(file, name)``, ``generator.set_active_adapter``) and onnxruntime
(``ort.LoraAdapter`` + ``RunOptions.add_active_adapter``) feed them by name at run time."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx_ir as ir

ADAPTER_FILE = "adapter.onnx_adapter"
SUFFIXES = (".lora_A", ".lora_B")


def expose(model: ir.Model) -> dict[str, np.ndarray]:
    """Turn every LoRA initializer into an input with an empty default; returns the values (sorted)."""
    values: dict[str, np.ndarray] = {}
    graph = model.graph
    for name in sorted(n for n in graph.initializers if n.endswith(SUFFIXES)):
        v = graph.initializers[name]
        arr = np.asarray(v.const_value.numpy(), dtype=np.float32)
        values[name] = arr
        rank = f"lora_rank_{(len(values) - 1) // 2}"   # A and B of one module (sorted: adjacent) share it
        a = name.endswith(".lora_A")
        empty = np.zeros((arr.shape[0], 0) if a else (0, arr.shape[1]), dtype=np.float32)
        v.const_value = ir.Tensor(empty, name=name)
        v.shape = ir.Shape([arr.shape[0], rank] if a else [rank, arr.shape[1]])
        graph.inputs.append(v)
    return values


def write_adapter(values: dict[str, np.ndarray], out_dir: Path) -> str:
    import onnxruntime as ort

    fmt = ort.AdapterFormat()
    fmt.set_adapter_version(1)
    fmt.set_model_version(1)
    arrays = {k: np.ascontiguousarray(values[k]) for k in sorted(values)}   # OrtValues borrow these buffers
    fmt.set_parameters({k: ort.OrtValue.ortvalue_from_numpy(a) for k, a in arrays.items()})
    fmt.export_adapter(str(Path(out_dir) / ADAPTER_FILE))
    return ADAPTER_FILE
