"""Read the plan's integers back out of model.pte.

XNNPACK serializes every constant it packs into the program's named-data segment under the
sha256 of its bytes (``backends/xnnpack/operators/node_visitor.py``): int8 weights as-is (both
``int8_weight_only``, the f32-qc8w GEMM, and ``8da8w``, qd8-f32-qc8w: the same qcint8 tensor), int4
weights as ``convert_to_qc4w`` nibbles (``q + 8``, two per byte, low nibble first), per-channel
scales as float32 ``[out]``, group-wise scales as bf16 ``[out, n_groups]`` (``scale_<sha256>``).
For every quantized Linear we rebuild those bytes from the plan, look the key up, decode the
stored bytes and compare them with the plan's integers; scales are compared as the runtime
reads them (bf16 for groups), giving the largest dequantized-weight deviation from the plan.
Embeddings (``embedding_int8``) are not XNNPACK data but program constants of the portable
gather: their integers (int8, int4 unpacked), fp32 scales and zero points are stored as-is (zero-padded
to the tensor alignment), so we look for the plan's exact bytes among the program's constant
buffers (not the XNNPACK data, where a tied int8 lm_head holds the same integers): bit-identical
or not found.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch


def _sha(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().numpy().tobytes() if t.dtype != torch.bfloat16
                          else t.contiguous().view(torch.int16).numpy().tobytes()).hexdigest()


def pack_qc4w(q: torch.Tensor) -> torch.Tensor:
    u = (q.to(torch.int16) + 8).to(torch.uint8).contiguous().view(-1)
    return (u[1::2] << 4 | u[::2]).view(q.shape[0], q.shape[1] // 2)


def unpack_qc4w(packed: bytes, rows: int, cols: int) -> torch.Tensor:
    u = torch.frombuffer(bytearray(packed), dtype=torch.uint8)
    out = torch.empty(u.numel() * 2, dtype=torch.int16)
    out[0::2], out[1::2] = (u & 0xF).to(torch.int16), (u >> 4).to(torch.int16)
    return (out - 8).to(torch.int8).view(rows, cols)


def _program_data(pte: Path) -> tuple[dict[str, bytes], set[bytes]]:
    """(XNNPACK named data by key, the program's own constant tensors' bytes)."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    f = deserialize_pte_binary(Path(pte).read_bytes())
    nd = f.named_data
    named = {} if nd is None else {k: bytes(nd.buffers[e.buffer_index]) for k, e in nd.pte_data.items()}
    return named, {bytes(b.storage) for b in f.program.constant_buffer}


def stored(data: bytes, constants: set[bytes]) -> bool:
    """``data`` is one of the program's constant buffers, which the serializer pads with zeros to
    its tensor alignment (a [4098, 1] fp32 scale table is stored as 16400 bytes)."""
    return any(len(c) >= len(data) and len(c) - len(data) < 64 and c.startswith(data) and not c[len(data):].strip(b"\0")
               for c in constants)


def _embedding_entry(name: str, qw, constants: set[bytes], problems: list[str]) -> dict:
    rows, cols = qw.q.shape
    parts = {"integers": qw.q.to(torch.int8),
             "scales": qw.scale.to(torch.float32).reshape(rows, cols // (qw.group_size or cols))}
    if qw.zero_point is not None:
        parts["zero_points"] = qw.zero_point.to(torch.int8)
    entry: dict = {"encoding": "embedding_int8", "bits": qw.bits, "group_size": qw.group_size}
    for label, t in parts.items():
        found = stored(t.contiguous().numpy().tobytes(), constants)
        entry[f"{label}_found"] = found
        if not found:
            problems.append(f"{name}: the plan's {label} are not in model.pte")
    entry["found"] = entry["integers_found"]
    entry["integers_identical"] = entry["integers_found"]        # found as the exact bytes
    entry["max_abs_dequant_deviation"] = 0.0 if all(entry[f"{k}_found"] for k in parts) else float("inf")
    entry["scale_dtype"] = "fp32"
    return entry


def readback(pkg_dir: Path, plan, model_file: str = "model.pte") -> dict:
    data, constants = _program_data(Path(pkg_dir) / model_file)
    tensors, problems, worst = {}, [], 0.0
    for name in plan.quantized_names():
        d = plan.decisions[name]
        if d.kind == "embedding":
            entry = _embedding_entry(name, plan.weights[plan.owner(name)], constants, problems)
            worst = max(worst, entry["max_abs_dequant_deviation"])
            tensors[name] = entry
            continue
        qw = plan.weights[plan.owner(name)]
        rows, cols = qw.q.shape
        width = qw.group_size or cols
        if qw.bits == 4:
            key, stored_scale = _sha(pack_qc4w(qw.q)), qw.scale.to(torch.float32).reshape(rows, cols // width)
            stored_scale = stored_scale.to(torch.bfloat16)
        else:
            key, stored_scale = _sha(qw.q.to(torch.int8)), qw.scale.to(torch.float32).reshape(rows)
        from slmpack.targets.executorch.quantize import _mode

        entry: dict = {"encoding": _mode(d)[0], "bits": qw.bits, "group_size": qw.group_size}
        raw = data.get(key)
        if raw is None:
            problems.append(f"{name}: the plan's int{qw.bits} weights are not in model.pte")
            entry["found"] = False
            tensors[name] = entry
            continue
        got = unpack_qc4w(raw, rows, cols) if qw.bits == 4 else \
            torch.frombuffer(bytearray(raw), dtype=torch.int8).view(rows, cols)
        entry["found"] = True
        entry["integers_identical"] = bool(torch.equal(got, qw.q.to(torch.int8)))
        if not entry["integers_identical"]:
            problems.append(f"{name}: stored integers differ from the plan")
        scale_key = "scale_" + _sha(stored_scale)
        entry["scales_found"] = scale_key in data
        if not entry["scales_found"]:
            problems.append(f"{name}: scales not found in model.pte")
        plan_scale = qw.scale.to(torch.float32).reshape(rows, -1)
        dev = (qw.q.float().reshape(rows, -1, width).abs().amax(-1)
               * (stored_scale.float().reshape(rows, -1) - plan_scale).abs()).max().item()
        entry["max_abs_dequant_deviation"] = dev
        entry["scale_dtype"] = "bf16" if qw.bits == 4 else "fp32"
        worst = max(worst, dev)
        tensors[name] = entry
    ints = [t["integers_identical"] for t in tensors.values() if "integers_identical" in t]
    return {"passed": not problems, "problems": problems,
            "bit_identical": bool(ints) and all(ints) and worst == 0.0,
            "integers_identical": bool(ints) and all(ints),
            "max_abs_dequant_deviation": worst, "tensors": tensors}
