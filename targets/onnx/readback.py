"""Read an ONNX artifact's stored integers back and prove they are the QuantPlan's.

``readback(pkg_dir, plan)`` decodes every encoding node listed in the model's
``slmpack.quantization`` metadata *the way ONNX Runtime reads it* (from the node's attributes
and inputs: MatMulNBits ``bits/block_size/K/N``, packed codes and zero points, the default zero
point ``2^(bits-1)``; MatMulInteger's int8 [K, N] weights and per-column zero points;
GatherBlockQuantized; the weight-only 8-bit dequantize chain) and compares with the plan:

* weight-only 8-bit ``MatMul``s (``encoding: int8_dequantized_at_load``): the constant
  ``Cast -> [Reshape] -> [Sub] -> Mul -> [Reshape] -> Transpose`` chain feeding the MatMul is
  evaluated in numpy (what ORT's constant folding computes at session creation) and must equal
  ``plan.dequantized`` bit for bit, reading the int8 (or shared uint8) codes, scales and zero
  points named in the metadata, which are compared as below;
* integer codes, scales and zero points bit-identical (per-channel scales repeated per block
  must all equal the plan's one scale); static activation scale / zero point identical;
* every quantized plan tensor is covered; no float initializer still holds a quantized tensor's
  dequantized values (an encoding that silently fell back to float); every fold override
  (``float_overrides``) is present bit-identically among the float initializers;
* ``max_abs_dequant_deviation``: max |dequantized(artifact) - plan.dequantized| per tensor.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from slmpack.targets.onnx.packing import to_signed, unpack
from slmpack.targets.onnx.quantize import DEQUANT, META_KEY

_FOLDABLE = {"Cast", "Reshape", "Sub", "Mul", "Transpose"}  # the weight-only 8-bit dequantize chain


def _attrs(node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


class _Reader:
    def __init__(self, model: onnx.ModelProto):
        self.inits = {i.name: i for i in model.graph.initializer}
        self.producer = {o: n for n in model.graph.node for o in n.output}
        self.nodes = {n.name: n for n in model.graph.node}

    def array(self, name: str) -> np.ndarray | None:
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        node = self.producer.get(name)  # a shared table seen through Reshape
        if node is not None and node.op_type == "Reshape":
            src, shape = self.array(node.input[0]), self.array(node.input[1])
            if src is not None and shape is not None:
                return src.reshape(tuple(int(x) for x in shape))
        return None

    def opt(self, node, i: int) -> np.ndarray | None:
        return self.array(node.input[i]) if len(node.input) > i and node.input[i] else None

    def evaluate(self, name: str, seen: set) -> np.ndarray | None:
        """Value of a constant subgraph made of ``_FOLDABLE`` ops on initializers, computed in numpy
        with ONNX semantics (fp32 elementwise, numpy broadcasting): the tensor ORT's constant folding
        produces. ``seen`` collects the initializers it reads."""
        if name in self.inits:
            seen.add(name)
            return numpy_helper.to_array(self.inits[name])
        node = self.producer.get(name)
        if node is None or node.op_type not in _FOLDABLE or node.domain not in ("", "ai.onnx"):
            return None
        ins = [self.evaluate(i, seen) for i in node.input]
        if any(x is None for x in ins):
            return None
        a = _attrs(node)
        if node.op_type == "Cast":
            return ins[0].astype(onnx.helper.tensor_dtype_to_np_dtype(a["to"]))
        if node.op_type == "Reshape":
            return ins[0].reshape(tuple(int(x) for x in ins[1]))
        if node.op_type == "Transpose":
            return np.transpose(ins[0], a.get("perm"))
        if ins[0].dtype != ins[1].dtype:
            return None
        return ins[0] - ins[1] if node.op_type == "Sub" else ins[0] * ins[1]


def _decode_blocks(data, scales, zp_packed, bits: int, block: int, k: int):
    """(q int8 [N, K], scales [N, k_blocks], zp int8 [N, k_blocks]) from block-quantized storage."""
    n = data.shape[0]
    u = unpack(data.reshape(n, -1), bits, k)
    g = scales.shape[1]
    zp = None if zp_packed is None else to_signed(unpack(zp_packed.reshape(n, -1), bits, g), bits)
    return to_signed(u, bits), scales.astype(np.float32), zp


def _decode_dequant(r: _Reader, node, entry: dict) -> dict:
    """Weight-only 8-bit: the float weight the constant dequantize chain feeding the MatMul computes
    (evaluated from the graph, ``float_weight`` [N, K]), and the integers it reads (named in the
    metadata; int8 codes, or the shared uint8 table's ``q + 128``)."""
    seen: set = set()
    w = r.evaluate(node.input[1], seen)
    q = r.array(entry["qweight"])
    n = q.shape[0]
    scales = r.array(entry["scales"]).astype(np.float32).reshape(n, -1)
    zp = None if not entry.get("qzeros") else r.array(entry["qzeros"]).reshape(n, -1)
    if q.dtype == np.uint8:  # codes of the shared GatherBlockQuantized table
        q = to_signed(q, 8)
        zp = None if zp is None else to_signed(zp, 8)
    reads = {entry["qweight"], entry["scales"]} | ({entry["qzeros"]} if entry.get("qzeros") else set())
    return {"q": q, "scales": scales, "zp": zp, "block": q.shape[1] // scales.shape[1], "bits": 8,
            "float_weight": None if w is None or w.ndim != 2 or w.dtype != np.float32 else np.ascontiguousarray(w.T),
            "chain_reads_stored": reads <= seen}


def decode_node(r: _Reader, node, meta_scales: str | None = None, entry: dict | None = None) -> dict:
    a = _attrs(node)
    if node.op_type == "MatMul" and entry is not None and entry.get("encoding") == DEQUANT:
        return _decode_dequant(r, node, entry)
    if node.op_type == "MatMulNBits":
        q, s, zp = _decode_blocks(r.array(node.input[1]), r.array(node.input[2]), r.opt(node, 3),
                                  a["bits"], a["block_size"], a["K"])
        return {"q": q, "scales": s, "zp": zp, "block": a["block_size"], "bits": a["bits"]}
    if node.op_type == "GatherBlockQuantized":
        data = r.array(node.input[0])
        k = data.shape[1] * 8 // a["bits"]
        q, s, zp = _decode_blocks(data, r.array(node.input[2]), r.opt(node, 3), a["bits"], a["block_size"], k)
        return {"q": q, "scales": s, "zp": zp, "block": a["block_size"], "bits": a["bits"]}
    if node.op_type == "MatMulInteger":  # weights [K, N] int8, per-column zero point, scales by name
        x = r.array(node.input[1])
        zp = r.opt(node, 3)
        scales = r.array(meta_scales)
        return {"q": np.ascontiguousarray(x.T), "scales": scales.astype(np.float32)[:, None],
                "zp": None if zp is None else zp.reshape(-1)[:, None], "block": x.shape[0], "bits": 8}
    raise ValueError(f"unknown encoding node {node.op_type}")


def _quantize_params(r: _Reader, q) -> tuple[float, int] | None:
    if q is None or q.op_type != "QuantizeLinear":
        return None
    return float(r.array(q.input[1]).reshape(-1)[0]), int(r.array(q.input[2]).reshape(-1)[0])


def _static_input(r: _Reader, node) -> tuple[float, int] | None:
    """(scale, zero point) of a ``QuantizeLinear -> DequantizeLinear`` pair feeding ``node``."""
    dq = r.producer.get(node.input[0])
    if dq is None or dq.op_type != "DequantizeLinear" or r.array(dq.input[0]) is not None:
        return None
    return _quantize_params(r, r.producer.get(dq.input[0]))


def _compare(dec: dict, qw, rows: tuple[int, int], k: int) -> dict:
    r0, r1 = rows
    q, s = dec["q"][r0:r1], dec["scales"][r0:r1]
    plan_q, plan_s = qw.q.numpy(), qw.scale.numpy().astype(np.float32)
    n_groups = plan_s.shape[1]
    rep = s.shape[1] // n_groups if n_groups and s.shape[1] % n_groups == 0 else 0
    s_exp = np.repeat(plan_s, rep, axis=1) if rep else None
    zp_plan = None if qw.zero_point is None else np.repeat(qw.zero_point.numpy(), rep or 1, axis=1)
    zp_art = None if dec["zp"] is None else dec["zp"][r0:r1]
    zp_ok = (zp_art is None and zp_plan is None) or (
        zp_art is not None and zp_plan is not None and np.array_equal(zp_art, zp_plan)) or (
        zp_art is not None and zp_plan is None and not zp_art.any())
    q_ok = q.shape == plan_q.shape and np.array_equal(q, plan_q)
    s_ok = s_exp is not None and s.shape == s_exp.shape and s.tobytes() == s_exp.tobytes()
    dev = None
    if q.shape == plan_q.shape and s_exp is not None:
        width = k // s.shape[1]
        qf = q.astype(np.float32).reshape(q.shape[0], -1, width)
        if zp_art is not None:
            qf = qf - zp_art.astype(np.float32)[:, :, None]
        deq = (qf * s[:, :, None]).reshape(q.shape)
        dev = float(np.abs(deq - qw.dequantize().numpy()).max())
    return {"q_identical": bool(q_ok), "scales_identical": bool(s_ok), "zero_points_identical": bool(zp_ok),
            "scale_blocks_per_group": rep, "max_abs_dequant_deviation": dev}


def _digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a, dtype=np.float32).tobytes()).hexdigest()


def readback(pkg_dir: Path, plan, model_file: str = "model.onnx") -> dict:
    model = onnx.load(str(Path(pkg_dir) / model_file))
    meta = {p.key: p.value for p in model.metadata_props}.get(META_KEY)
    if meta is None:
        return {"passed": not plan.quantized_names(), "problems": [f"{model_file} has no {META_KEY} metadata"],
                "tensors": {}}
    meta = json.loads(meta)
    r = _Reader(model)
    tensors, problems = {}, []
    for node_name, entry in sorted(meta.items()):
        node = r.nodes.get(node_name)
        if node is None or node.op_type != entry["op"]:
            problems.append(f"encoding node {node_name} ({entry['op']}) is missing")
            continue
        dec = decode_node(r, node, entry.get("scales"), entry)
        act = None
        if node.op_type == "MatMulNBits":
            act = _static_input(r, node)
        elif node.op_type == "MatMulInteger":
            act = _quantize_params(r, r.producer.get(node.input[0]))
        for name, r0, r1 in entry["tensors"]:
            d = plan.decisions.get(name)
            if d is None or d.weight is None:
                problems.append(f"{node_name} encodes {name}, which the plan keeps float")
                continue
            qw = plan.weights[plan.owner(name)]
            res = {"node": node_name, "op": node.op_type, "bits": dec["bits"], "block_size": dec["block"],
                   **_compare(dec, qw, (r0, r1), d.shape[1])}
            if dec["bits"] != d.weight.bits:
                problems.append(f"{name}: stored as {dec['bits']} bits, plan says {d.weight.bits}")
            if "float_weight" in dec:  # the folded weight ORT multiplies by: exactly plan.dequantized
                fw = dec["float_weight"]
                want = plan.dequantized(name).numpy()
                res["float_weight_identical"] = bool(
                    dec["chain_reads_stored"] and fw is not None and fw[r0:r1].shape == want.shape
                    and fw[r0:r1].tobytes() == want.tobytes())
                if not res["float_weight_identical"]:
                    problems.append(f"{name}: the dequantize chain of {node_name} does not compute the plan's "
                                    "dequantized weight from the stored integers")
            if name in plan.activations:
                want = plan.activations[name]
                wz = 0 if want.zero_point is None else want.zero_point
                res["activation_identical"] = act is not None and np.float32(act[0]) == np.float32(want.scale) \
                    and act[1] == wz
            ok = res["q_identical"] and res["scales_identical"] and res["zero_points_identical"] \
                and res.get("activation_identical", True)
            if not ok:
                problems.append(f"{name}: stored numbers differ from the plan")
            tensors.setdefault(name, res)
    missing = [n for n in plan.quantized_names() if n not in tensors]
    problems += [f"{n}: not encoded in {model_file}" for n in missing]
    floats = {}
    for init in model.graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT:
            floats.setdefault(_digest(numpy_helper.to_array(init)), init.name)
    for name in plan.quantized_names():
        deq = plan.dequantized(name).numpy()
        for view in (deq, deq.T):
            if _digest(view) in floats:
                problems.append(f"{name}: a float copy of its dequantized weight is still in the graph "
                                f"({floats[_digest(view)]})")
    absent = [n for n, v in plan.float_overrides.items() if _digest(v.numpy()) not in floats]
    problems += [f"{n}: fold override not found among the float initializers" for n in absent]
    devs = [t["max_abs_dequant_deviation"] for t in tensors.values() if t["max_abs_dequant_deviation"] is not None]
    return {"passed": not problems, "problems": problems, "tensors_checked": len(tensors),
            "bit_identical": all(t["q_identical"] and t["scales_identical"] and t["zero_points_identical"]
                                 and t.get("float_weight_identical", True) for t in tensors.values()),
            "max_abs_dequant_deviation": max(devs) if devs else None,
            "float_overrides_found": len(plan.float_overrides) - len(absent), "tensors": tensors}
