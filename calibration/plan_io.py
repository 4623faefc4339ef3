"""Save/load a QuantPlan as ``quant_plan.safetensors`` + ``quant_plan.json`` (deterministic bytes).

safetensors keys (``<section>/<tensor name>``):

    qweight/<name>         int8  [rows, cols]      integer weights (int4 unpacked in [-8, 7])
    scales/<name>          f32   [rows, n_groups]
    zero_points/<name>     int8  [rows, n_groups]  asymmetric only (signed offset)
    act_scale/<name>       f32   [1]               static int8 activations
    act_zero_point/<name>  int8  [1]               static asymmetric activations only
    float/<name>           f32   (any shape)       fold overrides (RMSNorm weights, biases)
    fold_scales/<NNNN>     f32   [in]              scales of fold record NNNN

The JSON (sorted keys, 2-space indent, trailing newline, no paths or timestamps) holds the schema
version, the recipe name, every decision, the fold records, calibration facts, the summary and
the sha256 of the safetensors file, which ``load_plan`` checks.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from slmpack.errors import BadInputError, PackageIntegrityError

from .layout import FoldRecord
from .decisions import ActivationQParams, DecisionKind, TensorDecision
from .rtn import QuantizedWeight
from .schemes import ActivationScheme, WeightScheme

SCHEMA_VERSION = 1
PLAN_JSON = "quant_plan.json"
PLAN_TENSORS = "quant_plan.safetensors"
CONVENTIONS = {
    "weights": "int8 tensor in [-2^(b-1), 2^(b-1)-1]; int4 stored unpacked",
    "dequantize": "(q - zero_point) * scale per contiguous group of group_size input columns",
    "zero_point": "asymmetric only; signed offset = unsigned zero point - 2^(b-1)",
    "scales": "float32 [rows, n_groups]; n_groups = 1 for per-channel",
}


def _tensors(plan) -> dict[str, torch.Tensor]:
    t: dict[str, torch.Tensor] = {}
    for name, qw in plan.weights.items():
        t[f"qweight/{name}"] = qw.q.to(torch.int8)
        t[f"scales/{name}"] = qw.scale.to(torch.float32)
        if qw.zero_point is not None:
            t[f"zero_points/{name}"] = qw.zero_point.to(torch.int8)
    for name, a in plan.activations.items():
        t[f"act_scale/{name}"] = torch.tensor([a.scale], dtype=torch.float32)
        if a.zero_point is not None:
            t[f"act_zero_point/{name}"] = torch.tensor([a.zero_point], dtype=torch.int8)
    for name, v in plan.float_overrides.items():
        t[f"float/{name}"] = v.to(torch.float32)
    for i, f in enumerate(plan.folds):
        t[f"fold_scales/{i:04d}"] = f.scales.to(torch.float32)
    return {k: v.detach().contiguous().clone() for k, v in sorted(t.items())}


def plan_json(plan, tensors_sha256: str) -> dict:
    return {
        "format": "slmpack.quant_plan",
        "schema_version": SCHEMA_VERSION,
        "recipe": plan.recipe,
        "conventions": CONVENTIONS,
        "tensors_file": PLAN_TENSORS,
        "tensors_sha256": tensors_sha256,
        "decisions": {n: d.to_json() for n, d in plan.decisions.items()},
        "quantized": {n: {"bits": qw.bits, "group_size": qw.group_size,
                          "symmetric": qw.symmetric} for n, qw in plan.weights.items()},
        "activations": sorted(plan.activations),
        "float_overrides": sorted(plan.float_overrides),
        "folds": [f.to_json() for f in plan.folds],
        "calibration": dict(plan.calibration),
        "summary": plan.summary(),
    }


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def save_plan(plan, directory) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    blob = st_save(_tensors(plan))  # no metadata: its map order is not guaranteed
    doc = plan_json(plan, hashlib.sha256(blob).hexdigest())
    text = json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=True, allow_nan=False) + "\n"
    _atomic_write(directory / PLAN_TENSORS, blob)
    _atomic_write(directory / PLAN_JSON, text.encode("utf-8"))


def _corrupt(message: str) -> PackageIntegrityError:
    return PackageIntegrityError(message, "E_QUANT_PLAN_CORRUPT")


def read_plan(directory) -> dict:
    directory = Path(directory)
    jpath, tpath = directory / PLAN_JSON, directory / PLAN_TENSORS
    for p in (jpath, tpath):
        if not p.is_file():
            raise BadInputError(f"quantization plan file missing: {p.name} in {directory}",
                                "E_QUANT_PLAN_MISSING")
    try:
        doc = json.loads(jpath.read_text("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _corrupt(f"{PLAN_JSON} is not valid JSON: {exc}") from None
    if doc.get("format") != "slmpack.quant_plan" or doc.get("schema_version") != SCHEMA_VERSION:
        raise BadInputError(f"{PLAN_JSON}: unsupported format/schema version "
                            f"{doc.get('format')!r}/{doc.get('schema_version')!r} "
                            f"(expected slmpack.quant_plan/{SCHEMA_VERSION})",
                            "E_QUANT_PLAN_SCHEMA")
    blob = tpath.read_bytes()
    if hashlib.sha256(blob).hexdigest() != doc.get("tensors_sha256"):
        raise _corrupt(f"{PLAN_TENSORS} does not match the sha256 recorded in {PLAN_JSON}")
    t = st_load(blob)
    try:
        decisions = {n: TensorDecision(
            name=n, kind=DecisionKind(d["kind"]), shape=tuple(d["shape"]),
            weight=None if d["weight"] is None else WeightScheme(**d["weight"]),
            activation=ActivationScheme(**d["activation"]), rule=d["rule"],
            tied_to=d["tied_to"]) for n, d in doc["decisions"].items()}
        weights = {n: QuantizedWeight(q=t[f"qweight/{n}"], scale=t[f"scales/{n}"],
                                      zero_point=t.get(f"zero_points/{n}"), bits=m["bits"],
                                      group_size=m["group_size"])
                   for n, m in doc["quantized"].items()}
        acts = {n: ActivationQParams(
            scale=float(t[f"act_scale/{n}"][0]),
            zero_point=None if f"act_zero_point/{n}" not in t
            else int(t[f"act_zero_point/{n}"][0])) for n in doc["activations"]}
        overrides = {n: t[f"float/{n}"] for n in doc["float_overrides"]}
        folds = tuple(FoldRecord(f["method"], f["prev"], f["prev_kind"], tuple(f["consumers"]),
                                 t[f"fold_scales/{i:04d}"], f["info"])
                      for i, f in enumerate(doc["folds"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise _corrupt(f"quantization plan is inconsistent: missing {exc}") from None
    return dict(recipe=doc["recipe"], decisions=decisions, weights=weights, activations=acts,
                float_overrides=overrides, folds=folds, calibration=doc["calibration"])
