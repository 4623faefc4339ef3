"""Encode a QuantPlan natively into the exported ONNX graph, as ONNX Runtime's CPU EP runs it.

The traced program already computes the plan's *dequantized* weights (the pipeline traces the
fake-quant reference), so each quantized weight appears in the graph as a float initializer
holding exactly ``plan.dequantized(name)`` (transposed ``[K, N]`` for a MatMul, or ``[N, K]``
behind a ``Transpose``; ``[V, H]`` for the embedding Gather). Sites are found by value identity
(sha256 of the float32 bytes; sibling weights concatenated by a fusion, e.g. q|k|v, are split
and matched per slice), then replaced:

==========================  ================================================================
plan decision               ONNX encoding (all exact: the stored integers are the plan's)
==========================  ================================================================
int8 weight-only linear     int8 ``[N, K]`` initializer -> ``Cast -> [Reshape [N, G, K/G]] ->
(float activations;         [Sub(zp)] -> Mul(scale) -> [Reshape] -> Transpose -> MatMul``. All
per-channel or grouped,     inputs are constants, so ONNX Runtime folds the chain once at session
sym or asym)                creation into fp32 ``plan.dequantized`` (bit-identical: exact integers,
                            one fp32 multiply) and runs a plain fp32 MatMul: int8 on disk, fp32
                            speed, but *more* runtime memory than fp32: ORT keeps the folded
                            tensors on its heap (SmolLM-135M shape: 1371 MB resident after
                            session creation, 2020 MB peak, vs 572 / 680 MB for the fp32 package
                            with external data; 8da8w: 212 / 238 MB). Not 8-bit MatMulNBits: in ORT 1.32
                            its ``accuracy_level=0`` x86 kernel is a ~30x slower fallback (M=1,
                            K=576, N=49152, 1 thread: ~270 ms vs ~9 ms). Int8 *compute* needs int8
                            activations (the dynamic 8da8w-style rows below). A tied lm_head reads
                            the embedding's uint8 GatherBlockQuantized table through the same chain
                            (``Sub`` of its zero points or of 128). Report:
                            ``dequantized_at_load``; metadata ``encoding: int8_dequantized_at_load``
int4, grouped               ``com.microsoft::MatMulNBits`` (bits, block_size = group size,
(group >= 16)               uint8 codes ``q + 2^(b-1)`` packed low-first, float scales
                            ``[N, k_blocks]``, packed uint8 zero points when asymmetric),
                            ``accuracy_level=0``: fp32 compute, as the plan's weight-only math
int4 per-channel            MatMulNBits with block_size = K (or the largest power-of-two
(float acts)                divisor of K >= 16, the row's scale repeated per block)
int8 per-channel,           ``QuantizeLinear(x, s_x, z_x) -> MatMulInteger(x_q, int8 W [K, N],
static int8 activations     z_x[, z_w]) -> Cast -> Mul(s_x * s_w)``: exact int32 accumulation
                            (ORT fuses it to MatMulIntegerToFloat). A QDQ ``DequantizeLinear ->
                            MatMul`` is *not* used: ORT rewrites a weight DQ -> MatMul into
                            MatMulNBits with int8 activations (accuracy level 4) by default
dynamic int8 activations    MatMulNBits (4 or 8 bits) with ``accuracy_level=4``: ORT quantizes A
                            to int8 per (row, block) and computes in int8
                            (``report.dynamic_activation_blocks``)
static int8 activations     ``QuantizeLinear -> DequantizeLinear`` on the MatMulNBits input with
(other weights)             the plan's per-tensor scale / zero point (8-bit grouped weights here
                            still use 8-bit MatMulNBits ``accuracy_level=0``: the slow kernel)
embedding                   ``com.microsoft::GatherBlockQuantized`` (uint8 data, bits, block as
                            above); a tied lm_head reads the *same* initializers via ``Reshape``
                            (MatMulNBits) or the int8 dequantize chain above
==========================  ================================================================

Initializers are named ``<module>.qweight / .scales / .qzeros / .input_scale /
.input_zero_point`` and nodes ``/model/layers.0/self_attn/q_proj/MatMulNBits`` (the int8
dequantize chain: ``.../q_proj/dequantize/Cast`` ... and ``.../q_proj/MatMul``). The metadata
entry ``slmpack.quantization`` maps every encoding node to its plan tensors (and row ranges),
which ``readback.py`` uses to decode the stored numbers back.
"""
from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import helper

from slmpack.errors import ToolchainError
from slmpack.targets.base import Unsupported
from slmpack.targets.onnx.packing import expand_groups, nbits_block, pack, to_unsigned
from slmpack.targets.onnx.quant_sites import Graph, find_sites, node_path, prune

META_KEY = "slmpack.quantization"
MIN_ORT = "1.32.0"  # the only version these encodings were verified on (uint8 GatherBlockQuantized, MatMulNBits)
MS_DOMAIN = "com.microsoft"
DEQUANT = "int8_dequantized_at_load"  # report / metadata name of the weight-only 8-bit encoding


def capabilities(options=None):
    from slmpack.calibration.plan import TargetQuantCapabilities
    from slmpack.calibration.schemes import ActivationMode

    return TargetQuantCapabilities(
        name="onnx", weight_bits=frozenset({4, 8}),
        group_sizes=frozenset({None, 16, 32, 64, 128, 256, 512, 1024}), asymmetric_weights=True,
        activation_modes=frozenset(ActivationMode), embedding_bits=frozenset({4, 8}))


def _uses_qdq(d) -> bool:
    """int8 per-channel weights under static int8 activations: an explicit integer GEMM
    (QuantizeLinear -> MatMulInteger -> scale). Not QDQ ``DequantizeLinear -> MatMul``: ORT's default
    optimizations rewrite a weight ``DequantizeLinear -> MatMul`` into MatMulNBits with int8-quantized
    activations (session default accuracy level 4), which is not the plan's math."""
    from slmpack.calibration.schemes import ActivationMode

    return (d.kind == "linear" and d.weight.bits == 8 and d.weight.group_size is None
            and d.activation.mode is ActivationMode.STATIC_INT8 and d.tied_to is None)


def _dequantizes(d) -> bool:
    """Weight-only 8-bit linears (float activations): stored as int8, dequantized by plain ops that
    ONNX Runtime constant-folds at session creation, then a float MatMul (see the table above)."""
    from slmpack.calibration.schemes import ActivationMode

    return d.kind == "linear" and d.weight is not None and d.weight.bits == 8 \
        and d.activation.mode is ActivationMode.NONE


def dynamic_activation_blocks(plan) -> dict[str, int]:
    """{linear: block} for every linear whose activations ORT quantizes dynamically (MatMulNBits
    accuracy_level 4 quantizes them symmetrically per (token, block)); known from the plan alone."""
    from slmpack.calibration.schemes import ActivationMode

    return {n: nbits_block(d.weight.group_size, d.shape[1]) for n, d in sorted(plan.decisions.items())
            if d.kind == "linear" and d.weight is not None and d.activation.mode is ActivationMode.DYNAMIC_INT8
            and not _uses_qdq(d) and not _dequantizes(d)}


def unsupported(spec, options, plan) -> list[Unsupported]:
    """Shape-dependent limits of the encodings above (checked before any calibration)."""
    from slmpack.calibration.schemes import ActivationMode

    out: list[Unsupported] = []
    if plan is None:
        return out
    for name, d in plan.decisions.items():
        if d.weight is None:
            continue
        if not (_uses_qdq(d) or _dequantizes(d)) and nbits_block(d.weight.group_size, d.shape[1]) is None:
            out.append(Unsupported(name, f"no MatMulNBits/GatherBlockQuantized block fits {d.shape[1]} input "
                                         f"columns with {d.weight.label} (needs a power of two >= 16)"))
        if d.activation.mode is ActivationMode.DYNAMIC_INT8 and not d.activation.symmetric:
            out.append(Unsupported(name, "ONNX Runtime quantizes dynamic int8 activations symmetrically "
                                         "(MatMulNBits accuracy_level=4); asymmetric is not encodable"))
    return out


def _same_scheme(plan, rows) -> None:
    ds = [plan.decisions[n] for n, _, _ in rows]
    if len({(d.weight, d.activation) for d in ds}) != 1:
        raise ToolchainError("a fused weight joins tensors with different quantization schemes: "
                             + ", ".join(n for n, _, _ in rows), "E_ONNX_QUANT_FUSED_MIXED")


class _Encoder:
    def __init__(self, graph: Graph, plan):
        self.graph, self.plan = graph, plan
        self.tables: dict[str, dict] = {}      # embedding owner / linear base -> its packed initializers
        self.meta: dict[str, dict] = {}
        self.report: dict[str, dict] = {}
        self.dynamic_blocks: dict[str, int] = {}
        self.folded: dict[tuple, tuple[str, dict]] = {}  # dequantized weight tensor per stored weight

    def _qparams(self, rows, block: int):
        """Concatenated (q int8 [N, K], scales [N, k/block], zp int8 [N, k/block] | None)."""
        qs, ss, zs = [], [], []
        for n, _, _ in rows:
            qw = self.plan.weights[self.plan.owner(n)]
            k = qw.q.shape[1]
            qs.append(qw.q.numpy())
            ss.append(expand_groups(qw.scale.numpy().astype(np.float32), block, qw.group_size, k))
            zs.append(None if qw.zero_point is None else expand_groups(qw.zero_point.numpy(), block, qw.group_size, k))
        zp = None if zs[0] is None else np.concatenate(zs)
        return np.concatenate(qs), np.concatenate(ss), zp

    def _table(self, base: str, rows, bits: int, block: int, blocks_3d: bool = False) -> dict:
        """Packed codes (2-D [N, K*bits/8] for GatherBlockQuantized, or MatMulNBits' 3-D B)."""
        q, s, zp = self._qparams(rows, block)
        g = self.graph
        shape = (q.shape[0], q.shape[1] // block, block * bits // 8)
        data = pack(to_unsigned(q, bits), bits)
        t = {"data": g.add(f"{base}.qweight", data.reshape(shape) if blocks_3d else data),
             "scales": g.add(f"{base}.scales", s), "zp": None, "block": block, "bits": bits, "shape": shape}
        if zp is not None:
            t["zp"] = g.add(f"{base}.qzeros", pack(to_unsigned(zp, bits), bits))
        return t

    def gather(self, node, rows) -> list:
        name = rows[0][0]
        d = self.plan.decisions[name]
        base = name[: -len(".weight")]
        block = nbits_block(d.weight.group_size, d.shape[1])
        t = self._table(base, rows, d.weight.bits, block)
        self.tables[self.plan.owner(name)] = t
        ins = [t["data"], node.input[1], t["scales"]] + ([t["zp"]] if t["zp"] else [])
        nname = f"{node_path(base)}/GatherBlockQuantized"
        self._record(nname, rows, "GatherBlockQuantized", bits=d.weight.bits, block_size=block)
        return [helper.make_node("GatherBlockQuantized", ins, list(node.output), name=nname, domain=MS_DOMAIN,
                                 bits=d.weight.bits, block_size=block, gather_axis=0, quantize_axis=1)]

    def matmul(self, node, rows) -> list:
        from slmpack.calibration.schemes import ActivationMode

        _same_scheme(self.plan, rows)
        d = self.plan.decisions[rows[0][0]]
        names = [n for n, _, _ in rows]
        base = names[0][: -len(".weight")] if len(names) == 1 else \
            names[0][: -len(".weight")] + "+" + "+".join(n.split(".")[-2] for n in names[1:])
        path = node_path(base)
        k, n_out = d.shape[1], rows[-1][2]
        if _uses_qdq(d):
            return self._integer(node, rows, base, path, k)
        if _dequantizes(d):
            return self._dequant(node, rows, base, path, k)
        nodes, a = [], node.input[0]
        if d.activation.mode is ActivationMode.STATIC_INT8:  # Q -> DQ on the input, then MatMulNBits
            s, z = self._act_qparams(base, names)
            q, a = f"{base}.input_quantized", f"{base}.input_dequantized"
            nodes += [helper.make_node("QuantizeLinear", [node.input[0], s, z], [q], name=f"{path}/input/QuantizeLinear"),
                      helper.make_node("DequantizeLinear", [q, s, z], [a], name=f"{path}/input/DequantizeLinear")]
        block = nbits_block(d.weight.group_size, k)
        owner = self.plan.owner(names[0])
        t = self.tables.get(owner) if len(rows) == 1 and owner != names[0] else None
        if t is not None and t["block"] == block:
            shape = self.graph.add(f"{base}.qweight_shape", np.array(t["shape"], dtype=np.int64))
            b = f"{base}.qweight_blocks"
            nodes.append(helper.make_node("Reshape", [t["data"], shape], [b], name=f"{path}/Reshape"))
        elif base in self.tables:  # the same weight read by another MatMul: share its initializers
            t = self.tables[base]
            b = t["data"]
        else:
            t = self._table(base, rows, d.weight.bits, block, blocks_3d=True)
            self.tables[base] = t
            b = t["data"]
        acc = 4 if d.activation.mode is ActivationMode.DYNAMIC_INT8 else 0
        if acc:
            self.dynamic_blocks.update({n: block for n in names})
        ins = [a, b, t["scales"]] + ([t["zp"]] if t["zp"] else [])
        nname = f"{path}/MatMulNBits"
        if nname in self.meta:  # a second use of the same weight
            nname = f"{path}/MatMulNBits_{sum(k.startswith(nname) for k in self.meta)}"
        self._record(nname, rows, "MatMulNBits", bits=d.weight.bits, block_size=block, accuracy_level=acc,
                     shared_with=owner if owner != names[0] and t is self.tables.get(owner) else None)
        return nodes + [helper.make_node("MatMulNBits", ins, list(node.output), name=nname, domain=MS_DOMAIN,
                                         K=k, N=n_out, bits=d.weight.bits, block_size=block, accuracy_level=acc)]

    def _integer(self, node, rows, base: str, path: str, k: int) -> list:
        """Static int8 activations x int8 per-channel weights: exact integer GEMM.
        QuantizeLinear(x) -> MatMulInteger(x_q, W_q [K, N], zp_x[, zp_w]) -> Cast -> * (s_x * s_w)."""
        from onnx import TensorProto

        names = [n for n, _, _ in rows]
        q, s, zp = self._qparams(rows, k)
        g = self.graph
        sa, za = self._act_qparams(base, names)
        w = g.add(f"{base}.qweight", np.ascontiguousarray(q.T))
        sw = g.add(f"{base}.scales", s[:, 0].copy())
        mm_in = [f"{base}.input_quantized", w, za] + ([g.add(f"{base}.qzeros", zp[:, 0].copy())] if zp is not None else [])
        nname = f"{path}/MatMulInteger"
        self._record(nname, rows, "MatMulInteger", bits=8, scales=sw)
        return [
            helper.make_node("QuantizeLinear", [node.input[0], sa, za], [mm_in[0]], name=f"{path}/input/QuantizeLinear"),
            helper.make_node("MatMulInteger", mm_in, [f"{base}.acc"], name=nname),
            helper.make_node("Cast", [f"{base}.acc"], [f"{base}.acc_float"], name=f"{path}/Cast", to=TensorProto.FLOAT),
            helper.make_node("Mul", [sa, sw], [f"{base}.output_scale"], name=f"{path}/output_scale/Mul"),
            helper.make_node("Mul", [f"{base}.acc_float", f"{base}.output_scale"], list(node.output),
                             name=f"{path}/Mul")]

    def _dequant(self, node, rows, base: str, path: str, k: int) -> list:
        """Weight-only 8-bit: ``Cast(q int8 [N, K]) [-> Reshape [N, G, K/G]] [-> Sub(zp)] -> Mul(scale)
        [-> Reshape [N, K]] -> Transpose -> MatMul``. Every input of the chain is a constant, so ONNX
        Runtime folds it at session creation into one fp32 weight: exactly ``plan.dequantized`` (the
        integers and ``q - zp`` are exact in fp32, one fp32 multiply by the plan's scale per element,
        as in ``calibration.rtn.dequantize``); then a plain fp32 MatMul runs. A tied lm_head reads the
        embedding's uint8 GatherBlockQuantized table (codes ``q + 128``, per-block scales and zero
        points): ``u - z_u = q - zp`` exactly, and the block-repeated scales are the plan's."""
        from onnx import TensorProto

        g, names = self.graph, [n for n, _, _ in rows]
        owner = self.plan.owner(names[0])
        shared = self.tables.get(owner) if len(rows) == 1 and owner != names[0] else None
        if shared is not None and shared.get("bits") != 8:
            shared = None
        key = ("table", owner) if shared is not None else ("own", base)
        nname = f"{path}/MatMul"
        if nname in self.meta:  # a second MatMul of the same module
            nname = f"{nname}_{sum(k_.startswith(nname) for k_ in self.meta)}"
        if key in self.folded:  # the same weight read by another MatMul: reuse its dequantized tensor
            w_t, info = self.folded[key]
            self._record(nname, rows, "MatMul", **info)
            return [helper.make_node("MatMul", [node.input[0], w_t], list(node.output), name=nname)]
        nodes = []
        p = f"{path}/dequantize"
        if shared is not None:
            n_rows, block = shared["shape"][0], shared["block"]
            groups = k // block
            qname, sname, zname, offset = shared["data"], shared["scales"], shared["zp"], 128
        else:
            q, s, zp = self._group_params(rows)
            n_rows, groups = q.shape[0], s.shape[1]
            block = k // groups
            gshape = (n_rows, groups, 1) if groups > 1 else (n_rows, 1)
            qname = g.add(f"{base}.qweight", q)
            sname = g.add(f"{base}.scales", s.reshape(gshape))
            zname = None if zp is None else g.add(f"{base}.qzeros", zp.reshape(gshape))
            offset = 0
        x = f"{base}.qweight_float"
        nodes.append(helper.make_node("Cast", [qname], [x], name=f"{p}/Cast", to=TensorProto.FLOAT))
        if groups > 1:
            nodes.append(helper.make_node("Reshape", [x, g.add(f"{base}.group_shape", np.array(
                [n_rows, groups, block], np.int64))], [f"{base}.qweight_groups"], name=f"{p}/Reshape"))
            x = f"{base}.qweight_groups"
        param_shape = g.add(f"{base}.param_shape", np.array([n_rows, groups, 1], np.int64)) \
            if shared is not None and groups > 1 else None
        if zname is not None:
            z = f"{base}.qzeros_float"
            nodes.append(helper.make_node("Cast", [zname], [z], name=f"{p}/zero_point/Cast", to=TensorProto.FLOAT))
            if param_shape:
                nodes.append(helper.make_node("Reshape", [z, param_shape], [f"{z}_groups"],
                                              name=f"{p}/zero_point/Reshape"))
                z = f"{z}_groups"
        elif offset:  # symmetric codes in the shared uint8 table: the default zero point 2^(bits-1)
            z = g.add(f"{base}.code_offset", np.array(float(offset), np.float32))
        else:
            z = None
        if z is not None:
            nodes.append(helper.make_node("Sub", [x, z], [f"{base}.qweight_centered"], name=f"{p}/Sub"))
            x = f"{base}.qweight_centered"
        if param_shape:
            nodes.append(helper.make_node("Reshape", [sname, param_shape], [f"{base}.scales_groups"],
                                          name=f"{p}/scales/Reshape"))
            sname_used = f"{base}.scales_groups"
        else:
            sname_used = sname
        nodes.append(helper.make_node("Mul", [x, sname_used], [f"{base}.weight_dequantized"], name=f"{p}/Mul"))
        x = f"{base}.weight_dequantized"
        if groups > 1:
            nodes.append(helper.make_node("Reshape", [x, g.add(f"{base}.weight_shape", np.array(
                [n_rows, k], np.int64))], [f"{base}.weight_rows"], name=f"{p}/Reshape_1"))
            x = f"{base}.weight_rows"
        w_t = f"{base}.weight_transposed"
        nodes.append(helper.make_node("Transpose", [x], [w_t], name=f"{p}/Transpose", perm=[1, 0]))
        info = {"encoding": DEQUANT, "bits": 8, "block_size": block, "qweight": qname, "scales": sname,
                "qzeros": zname, "code_offset": offset or None,
                "shared_with": owner if shared is not None else None}
        self.folded[key] = (w_t, info)
        self._record(nname, rows, "MatMul", **info)
        return nodes + [helper.make_node("MatMul", [node.input[0], w_t], list(node.output), name=nname)]

    def _group_params(self, rows):
        """Concatenated plan numbers per plan group: (q int8 [N, K], scales [N, G], zp int8 [N, G] | None)."""
        qs, ss, zs = [], [], []
        for n, _, _ in rows:
            qw = self.plan.weights[self.plan.owner(n)]
            qs.append(qw.q.numpy().astype(np.int8))
            ss.append(qw.scale.numpy().astype(np.float32))
            zs.append(None if qw.zero_point is None else qw.zero_point.numpy().astype(np.int8))
        return np.concatenate(qs), np.concatenate(ss), None if zs[0] is None else np.concatenate(zs)

    def _act_qparams(self, base: str, names) -> tuple[str, str]:
        acts = {(self.plan.activations[n].scale, self.plan.activations[n].zero_point) for n in names}
        if len(acts) != 1:
            raise ToolchainError(f"fused linears {', '.join(names)} read one input but have different static "
                                 "activation ranges", "E_ONNX_QUANT_FUSED_MIXED")
        scale, zp = acts.pop()
        return (self.graph.add(f"{base}.input_scale", np.array(scale, dtype=np.float32)),
                self.graph.add(f"{base}.input_zero_point", np.array(0 if zp is None else zp, dtype=np.int8)))

    def _record(self, node_name: str, rows, op: str, **attrs) -> None:
        self.meta[node_name] = {"op": op, "tensors": [[n, r0, r1] for n, r0, r1 in rows],
                                **{k: v for k, v in attrs.items() if v is not None}}
        for n, _, _ in rows:
            self.report[n] = {"node": node_name, "op": op, **{k: v for k, v in attrs.items() if v is not None}}


def encode(model: onnx.ModelProto, plan) -> dict:
    """Rewrite ``model`` in place; returns the encoding report (per-tensor ops, counts)."""
    graph = Graph(model)
    sites = find_sites(graph, plan)
    covered = {n for _, _, rows in sites for n, _, _ in rows}
    missing = [n for n in plan.quantized_names() if n not in covered]
    if missing:
        raise ToolchainError(f"{len(missing)} quantized tensor(s) of the plan were not found in the ONNX graph "
                             f"(e.g. {missing[0]})", "E_ONNX_QUANT_UNMAPPED", details={"tensors": missing})
    enc = _Encoder(graph, plan)
    replaced: dict[int, list] = {}
    for i, kind, rows in sorted(sites, key=lambda s: s[1] != "gather"):  # embeddings first: tables to share
        node = graph.g.node[i]
        replaced[i] = enc.gather(node, rows) if kind == "gather" else enc.matmul(node, rows)
    new_nodes = []
    for i, node in enumerate(graph.g.node):
        new_nodes.extend(replaced.get(i, [node]))
    del graph.g.node[:]
    graph.g.node.extend(new_nodes)
    graph.g.initializer.extend(graph.new_inits)
    prune(graph.g)
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    model.metadata_props.append(onnx.StringStringEntryProto(
        key=META_KEY, value=json.dumps(enc.meta, sort_keys=True, separators=(",", ":"))))
    counts: dict[str, int] = {}
    for m in enc.meta.values():
        op = f"{m['op']}[{m['encoding']}]" if "encoding" in m else m["op"]
        counts[op] = counts.get(op, 0) + 1
    return {"tensors": dict(sorted(enc.report.items())), "node_counts": dict(sorted(counts.items())),
            "dequantized_at_load": sorted(n for n, r in enc.report.items() if r.get("encoding") == DEQUANT),
            "dynamic_activation_blocks": dict(sorted(enc.dynamic_blocks.items())),
            "static_activation_tensors": sorted(plan.activations)}
