"""Structural check of a Core ML package (ladder step (a)): what Core ML will load matches the
manifest and the deployment target.

1. the root model parses, is an ML program, with the manifest's specification version;
2. every op is one we emit (``ops.EMITTED_OPS``) and exists at the deployment target, both by our
   table and by coremltools' op registry (``SSAOpRegistry``);
3. inputs, outputs and states (names, shapes, dtypes) equal the manifest's I/O signature, and the
   KV-cache names are the ones the manifest declares;
4. every weight blob referenced resolves (sentinel, dtype, size) and the interpreter can load the
   program (which also refuses ops it does not implement).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from slmpack.errors import SlmpackError
from slmpack.targets.coreml import names
from slmpack.targets.coreml.describe import signature
from slmpack.targets.coreml.ops import EMITTED_OPS
from slmpack.targets.coreml.options import DeploymentTarget

BACKEND_ONLY_OPS = {"write_state": 9}   # written by coremltools' serializer, not a pymil op


def _registry_level(op_type: str) -> int | None:
    from coremltools.converters.mil.mil.ops.registry import SSAOpRegistry

    if op_type in BACKEND_ONLY_OPS:
        return BACKEND_ONLY_OPS[op_type]
    versions = SSAOpRegistry.core_ops.get(op_type)
    return min(int(v.value) for v in versions) if versions else None


@dataclass(frozen=True)
class ProgramCheck:
    """Steps 1 and 2 of the check; ``readable`` False: the program could not be read at all."""

    problems: tuple[str, ...]
    readable: bool


def check_program(package: Path, runtime: dict) -> ProgramCheck:
    """The root model parses, is an ML program at the deployment target's specification version and
    holds only ops we emit that exist at that target (steps 1 and 2; shared with encoder packages)."""
    from slmpack.runtime.mil.program import load_model_spec

    try:
        target = DeploymentTarget(runtime.get("deployment_target"))
        spec, _ = load_model_spec(package)
    except (ValueError, SlmpackError) as e:
        return ProgramCheck((f"{package.name}: {e}",), False)
    if spec.WhichOneof("Type") != "mlProgram":
        return ProgramCheck((f"model type is {spec.WhichOneof('Type')!r}, not an ML program",), False)
    problems = []
    if spec.specificationVersion != target.level:
        problems.append(f"specification version {spec.specificationVersion} != {target.level} "
                        f"({target.value})")
    for fname, fn in sorted(spec.mlProgram.functions.items()):
        seen = sorted({op.type for op in fn.block_specializations[fn.opset].operations})
        for op_type in seen:
            ours, theirs = EMITTED_OPS.get(op_type), _registry_level(op_type)
            if ours is None:
                problems.append(f"{fname}: op {op_type!r} is not one slmpack emits")
            elif ours > target.level or theirs is None or theirs > target.level:
                problems.append(f"{fname}: op {op_type!r} needs specification version {max(ours, theirs or 99)}, "
                                f"deployment target {target.value} has {target.level}")
    return ProgramCheck(tuple(problems), True)


def interpreter_loads(package: Path) -> list[str]:
    """Step 4: every weight blob resolves and the interpreter implements every op."""
    from slmpack.runtime.mil import Interpreter, load_mlpackage

    try:
        Interpreter(load_mlpackage(package))
    except SlmpackError as e:
        return [f"cannot load the program: {e}"]
    return []


def check_package(pkg_dir: Path, manifest: dict) -> list[str]:
    package = Path(pkg_dir) / manifest["artifact"]
    program = check_program(package, manifest.get("runtime", {}))
    if not program.readable:
        return list(program.problems)
    problems = list(program.problems)
    got = signature(package)
    want = manifest.get("io", {})
    for part in ("inputs", "outputs", "states"):
        if got[part] != want.get(part, []):
            problems.append(f"{part} differ from the manifest: package {got[part]} vs manifest {want.get(part)}")
    kv = manifest.get("kv_cache", {})
    declared = [f["name"] for f in got["states" if kv.get("kind") == "state" else "inputs"]]
    missing = [n for n in kv.get("names", []) if n not in declared]
    if missing:
        problems.append(f"KV cache {kv.get('kind')} names missing from the package: {missing}")
    if kv.get("kind") == "io":
        outs = {f["name"] for f in got["outputs"]}
        problems += [f"cache output {names.cache_out_name(n)!r} is missing" for n in kv.get("names", [])
                     if names.cache_out_name(n) not in outs]
    return problems + interpreter_loads(package)
