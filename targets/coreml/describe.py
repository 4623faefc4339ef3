"""The manifest's view of a saved package: I/O signature, KV-cache layout, op types — read back
from ``model.mlmodel`` (what Core ML will see), not from what we asked coremltools for."""
from __future__ import annotations

from pathlib import Path

from slmpack.exporter.kv_cache import CacheLayout
from slmpack.targets.coreml import names
from slmpack.runtime.mil.program import load_model_spec

_DTYPES = {65552: "float16", 65568: "float32", 65600: "float64", 131104: "int32", 131080: "int8"}


def feature(f, flexible: tuple[str, ...] = (names.SEQ_DIM,)) -> dict:
    """name, dtype and shape of one feature; its i-th flexible dim is labelled ``flexible[i][lo..hi]``."""
    kind = f.type.WhichOneof("Type")
    arr = f.type.multiArrayType if kind == "multiArrayType" else f.type.stateType.arrayType
    shape: list = [int(d) for d in arr.shape]
    ranges = list(arr.shapeRange.sizeRanges)
    if ranges:
        shape, i = [], 0
        for r in ranges:
            if r.lowerBound == r.upperBound:
                shape.append(int(r.lowerBound))
                continue
            shape.append(f"{flexible[i] if i < len(flexible) else '?'}[{r.lowerBound}..{r.upperBound}]")
            i += 1
    return {"name": f.name, "dtype": _DTYPES.get(arr.dataType, str(arr.dataType)), "shape": shape}


def _program_shapes(spec) -> dict[str, list]:
    """Declared shapes of the main function's block outputs (None for flexible dims)."""
    fn = spec.mlProgram.functions["main"]
    block = fn.block_specializations[fn.opset]
    wanted, out = set(block.outputs), {}
    for op in block.operations:
        for o in op.outputs:
            if o.name in wanted and o.type.WhichOneof("type") == "tensorType":
                out[o.name] = [int(d.constant.size) if d.WhichOneof("dimension") == "constant" else None
                               for d in o.type.tensorType.dimensions]
    return out


def signature(package: Path, flexible: tuple[str, ...] = (names.SEQ_DIM,)) -> dict:
    """The package's inputs, outputs and states. Flexible input dims are named by ``flexible`` in
    order (decoders: the prompt length; encoders: batch, sequence); an output's flexible dims
    (Core ML leaves them unshaped) take the first flexible input's labels in order."""
    spec, _ = load_model_spec(package)
    d = spec.description
    inputs = [feature(f, flexible) for f in d.input]
    labels = next(([dim for dim in f["shape"] if isinstance(dim, str)] for f in inputs
                   if any(isinstance(dim, str) for dim in f["shape"])), [])
    outputs = []
    declared = _program_shapes(spec)
    for f in d.output:
        entry = feature(f, flexible)
        if not entry["shape"] and f.name in declared:
            it = iter(labels)
            entry["shape"] = [next(it, "?") if dim is None else dim for dim in declared[f.name]]
        outputs.append(entry)
    return {"inputs": inputs, "outputs": outputs, "states": [feature(f, flexible) for f in d.state]}


def op_types(package: Path) -> list[str]:
    spec, _ = load_model_spec(package)
    out = set()
    for fn in spec.mlProgram.functions.values():
        for op in fn.block_specializations[fn.opset].operations:
            out.add(op.type)
    return sorted(out)


def describe(package: Path, spec, options, layout: CacheLayout, cfg) -> tuple[dict, dict, list[str]]:
    io = signature(package)
    caches = names.cache_names(spec.num_layers)
    state = layout is CacheLayout.BUFFER
    kv_cache = {"layout": layout.value, "kind": "state" if state else "io", "names": caches,
                "output_names": [] if state else [names.cache_out_name(n) for n in caches],
                "dtype": next(f["dtype"] for f in (io["states"] if state else io["inputs"]) if f["name"] == caches[0]),
                "shape": [1, spec.num_kv_heads, cfg.max_context, spec.head_dim], "update": "slice",
                "positions": "input_pos[0] .. input_pos[0] + S - 1 (consecutive)"}
    return io, kv_cache, op_types(package)
