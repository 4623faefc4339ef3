"""Parse an ``.mlpackage`` (or a bare ``.mlmodel``) into plain objects the interpreter executes.

``Manifest.json`` names the root model item; its ``model.mlmodel`` is a ``Model`` protobuf whose
``mlProgram`` holds the MIL functions. Blob-file values are resolved relative to the model file
(``@model_path/weights/weight.bin``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from coremltools.proto import Model_pb2

from .blob import BlobFile
from .errors import MILFormatError
from .values import TensorSpec, decode_value, tensor_spec

MODEL_PATH_PREFIX = "@model_path/"


@dataclass(frozen=True)
class Literal:
    """An op argument bound to a value in the program text (not to a variable)."""

    value: object


@dataclass
class Op:
    type: str
    name: str
    inputs: dict[str, list]            # param -> [variable name (str) | Literal, ...]
    outputs: list[TensorSpec]
    attributes: dict[str, object]
    has_blocks: bool = False


@dataclass
class Function:
    name: str
    opset: str
    inputs: list[TensorSpec]
    ops: list[Op]
    outputs: list[str]


@dataclass
class Program:
    path: Path
    spec_version: int
    functions: dict[str, Function]
    description: object                # Model_pb2.ModelDescription
    blob_files: dict[str, BlobFile] = field(default_factory=dict)


def root_model_file(package: Path) -> Path:
    package = Path(package)
    if package.is_file():
        return package
    manifest = package / "Manifest.json"
    if not manifest.is_file():
        raise MILFormatError(f"{package}: no Manifest.json (not an .mlpackage)")
    try:
        m = json.loads(manifest.read_text(encoding="utf-8"))
        entry = m["itemInfoEntries"][m["rootModelIdentifier"]]
        path = package / "Data" / entry["path"]
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise MILFormatError(f"{manifest}: malformed ({type(e).__name__}: {e})") from None
    if not path.is_file():
        raise MILFormatError(f"{package}: root model {entry['path']!r} is missing")
    return path


def load_model_spec(package: Path) -> tuple[Model_pb2.Model, Path]:
    path = root_model_file(package)
    spec = Model_pb2.Model()
    try:
        spec.ParseFromString(path.read_bytes())
    except Exception as e:  # protobuf raises DecodeError and friends
        raise MILFormatError(f"{path}: not a Core ML Model protobuf ({type(e).__name__})") from None
    return spec, path


def load_mlpackage(package: Path) -> Program:
    spec, model_file = load_model_spec(package)
    if spec.WhichOneof("Type") != "mlProgram":
        raise MILFormatError(f"{model_file}: model type {spec.WhichOneof('Type')!r} is not an ML program")
    program = Program(Path(package), int(spec.specificationVersion), {}, spec.description)

    def blobs(file_name: str) -> BlobFile:
        if file_name not in program.blob_files:
            if not file_name.startswith(MODEL_PATH_PREFIX):
                raise MILFormatError(f"weight file {file_name!r} is not relative to @model_path")
            rel = Path(file_name[len(MODEL_PATH_PREFIX):])
            if rel.is_absolute() or ".." in rel.parts:
                raise MILFormatError(f"weight file {file_name!r} escapes the package")
            program.blob_files[file_name] = BlobFile(model_file.parent / rel)
        return program.blob_files[file_name]

    for fname, fn in sorted(spec.mlProgram.functions.items()):
        if fn.opset not in fn.block_specializations:
            raise MILFormatError(f"function {fname!r} has no block for its opset {fn.opset!r}")
        block = fn.block_specializations[fn.opset]
        ops = [_op(o, blobs) for o in block.operations]
        program.functions[fname] = Function(fname, fn.opset, [tensor_spec(i.name, i.type) for i in fn.inputs], ops,
                                             list(block.outputs))
    return program


def _op(o, blobs) -> Op:
    inputs = {}
    for param, arg in sorted(o.inputs.items()):
        bound = []
        for b in arg.arguments:
            kind = b.WhichOneof("binding")
            bound.append(b.name if kind == "name" else Literal(decode_value(b.value, blobs)))
        inputs[param] = bound
    attributes = {k: decode_value(v, blobs) for k, v in sorted(o.attributes.items())}
    name = attributes.get("name")
    name = str(name.item() if hasattr(name, "item") else name) if name is not None else (
        o.outputs[0].name if o.outputs else o.type)
    return Op(o.type, name, inputs, [tensor_spec(x.name, x.type) for x in o.outputs], attributes, bool(o.blocks))
