"""The package manifest as one typed, frozen, schema-versioned record (standard library only).

``Manifest.to_json()`` is canonical (``canonical_json``: sorted keys, fixed indentation), so the
same export writes the same bytes. ``Manifest.from_json()`` validates every field and raises
``BadInputError(E_MANIFEST_INVALID)`` naming the field; every field that names a file (artifact,
test vectors, tokenizer files, quant plan files, bundles) must be a plain relative path inside the
package *and* an entry of ``files`` (or, for a directory artifact such as ``model.mlpackage``, the
prefix of entries), so a manifest can never point a runner outside its package.
"""
from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from .errors import BadInputError, ErrorCode
from .records import (EMPTY, JsonMap, LadderResult, PassResult, Readback, TargetName, Tolerance, freeze, invalid,
                      need, passes_from_json, passes_to_json, rest, thaw)

SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.json"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class VectorsReference(str, enum.Enum):
    """What the test vectors were computed with."""

    FP32 = "fp32"
    FAKE_QUANT = "fake_quant"


def check_relpath(path: Any, field_name: str) -> str:
    """A plain relative POSIX path with no way out of the package (no '..', no absolute, no '\\')."""
    if not isinstance(path, str) or not path:
        raise invalid(field_name, f"expected a non-empty relative path, got {path!r}")
    bad = ("\\" in path or "\x00" in path or path.startswith("/") or re.match(r"^[A-Za-z]:", path) is not None
           or any(part in ("", ".", "..") for part in path.split("/")))
    if bad:
        raise invalid(field_name, f"{path!r} is not a plain relative path inside the package")
    return path


def canonical_json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"


@dataclass(frozen=True)
class SourceDigests:
    checkpoint_sha256: str
    architecture: str
    model_dir_name: str
    details: JsonMap = field(default_factory=lambda: EMPTY)          # further digests (tokenizer, chat template, adapter)

    KNOWN = ("checkpoint_sha256", "architecture", "model_dir_name")

    def to_json(self) -> dict:
        return {**thaw(self.details), "checkpoint_sha256": self.checkpoint_sha256,
                "architecture": self.architecture, "model_dir_name": self.model_dir_name}

    @classmethod
    def from_json(cls, d: Any, w: str = "source") -> "SourceDigests":
        sha = need(d, "checkpoint_sha256", str, w)
        if not _SHA256.match(sha):
            raise invalid(f"{w}.checkpoint_sha256", f"not a sha256 hex digest: {sha!r}")
        return cls(sha, need(d, "architecture", str, w), need(d, "model_dir_name", str, w), rest(d, cls.KNOWN))


@dataclass(frozen=True)
class ModelSummary:
    """The architecture facts a runner and the fit check need; ``details`` keeps every other
    ModelSpec field (family deltas) as written."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    max_context: int
    max_prompt: int
    num_parameters: int
    eos_token_ids: tuple[int, ...] = ()
    details: JsonMap = field(default_factory=lambda: EMPTY)

    INTS = ("vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim", "max_context",
            "max_prompt", "num_parameters")

    def to_json(self) -> dict:
        return {**thaw(self.details), **{k: getattr(self, k) for k in self.INTS},
                "eos_token_ids": list(self.eos_token_ids)}

    @classmethod
    def from_json(cls, d: Any, w: str = "model") -> "ModelSummary":
        vals = {k: need(d, k, int, w) for k in cls.INTS}
        for k, v in vals.items():
            if v < 0 or (v == 0 and k != "num_parameters"):
                raise invalid(f"{w}.{k}", f"must be positive, got {v}")
        eos = need(d, "eos_token_ids", list, w, optional=True, default=[])
        if not all(isinstance(e, int) and not isinstance(e, bool) for e in eos):
            raise invalid(f"{w}.eos_token_ids", "expected a list of ints")
        return cls(**vals, eos_token_ids=tuple(eos), details=rest(d, (*cls.INTS, "eos_token_ids")))


@dataclass(frozen=True)
class TensorSig:
    name: str
    dtype: str
    shape: tuple[int | str, ...]

    def to_json(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_json(cls, d: Any, w: str) -> "TensorSig":
        return cls(need(d, "name", str, w), need(d, "dtype", str, w), tuple(need(d, "shape", list, w)))


def _sigs(d: Mapping, key: str, w: str) -> tuple[TensorSig, ...]:
    return tuple(TensorSig.from_json(x, f"{w}.{key}[{i}]")
                 for i, x in enumerate(need(d, key, list, w, optional=True, default=[])))


@dataclass(frozen=True)
class IoSignature:
    """Top-level inputs/outputs of the artifact's entry point; ``details``: method names, per-signature
    I/O (LiteRT), Core ML states, prompt lengths."""

    inputs: tuple[TensorSig, ...] = ()
    outputs: tuple[TensorSig, ...] = ()
    details: JsonMap = field(default_factory=lambda: EMPTY)

    def to_json(self) -> dict:
        out = thaw(self.details)
        if self.inputs or self.outputs:
            out.update(inputs=[s.to_json() for s in self.inputs], outputs=[s.to_json() for s in self.outputs])
        return out

    @classmethod
    def from_json(cls, d: Any, w: str = "io") -> "IoSignature":
        return cls(_sigs(d, "inputs", w), _sigs(d, "outputs", w), rest(d, ("inputs", "outputs")))


@dataclass(frozen=True)
class KvCacheInfo:
    """KV-cache layout (``io_concat``, ``buffer``, ``io_static``, ...), dtype, shape and context."""

    layout: str
    dtype: str
    shape: tuple[int | str, ...] = ()
    max_context: int | None = None
    details: JsonMap = field(default_factory=lambda: EMPTY)

    def to_json(self) -> dict:
        out = {**thaw(self.details), "layout": self.layout, "dtype": self.dtype}
        if self.shape:
            out["shape"] = list(self.shape)
        if self.max_context is not None:
            out["max_context"] = self.max_context
        return out

    @classmethod
    def from_json(cls, d: Any, w: str = "kv_cache") -> "KvCacheInfo":
        return cls(need(d, "layout", str, w), need(d, "dtype", str, w),
                   tuple(need(d, "shape", list, w, optional=True, default=[])),
                   need(d, "max_context", int, w, optional=True),
                   rest(d, ("layout", "dtype", "shape", "max_context")))


@dataclass(frozen=True)
class RuntimeInfo:
    name: str
    min_version: str
    details: JsonMap = field(default_factory=lambda: EMPTY)          # backends, operators, compute units, bundles

    def to_json(self) -> dict:
        return {**thaw(self.details), "name": self.name, "min_version": self.min_version}

    @classmethod
    def from_json(cls, d: Any, w: str = "runtime") -> "RuntimeInfo":
        return cls(need(d, "name", str, w), need(d, "min_version", str, w), rest(d, ("name", "min_version")))


@dataclass(frozen=True)
class QuantSummary:
    """The ``quantization`` block: ``plan is None`` for float packages."""

    plan: str | None = None
    tensors_file: str | None = None
    recipe_file: str | None = None
    recipe: str | None = None
    readback_passed: bool | None = None
    details: JsonMap = field(default_factory=lambda: EMPTY)          # summary, tensors_by_rule, calibration, config, encoding

    FILES = ("plan", "tensors_file", "recipe_file")

    def to_json(self) -> dict:
        if self.plan is None:
            return {**thaw(self.details), "plan": None}
        return {**thaw(self.details), "plan": self.plan, "tensors_file": self.tensors_file,
                "recipe_file": self.recipe_file, "recipe": self.recipe, "readback_passed": self.readback_passed}

    @classmethod
    def from_json(cls, d: Any, w: str = "quantization") -> "QuantSummary":
        return cls(*(need(d, k, str, w, optional=True) for k in (*cls.FILES, "recipe")),
                   readback_passed=need(d, "readback_passed", bool, w, optional=True),
                   details=rest(d, (*cls.FILES, "recipe", "readback_passed")))


@dataclass(frozen=True)
class TokenizerInfo:
    files: tuple[str, ...] = ()

    def to_json(self) -> dict:
        return {"files": list(self.files)}

    @classmethod
    def from_json(cls, d: Any, w: str = "tokenizer") -> "TokenizerInfo":
        files = need(d, "files", list, w)
        return cls(tuple(check_relpath(f, f"{w}.files[{i}]") for i, f in enumerate(files)))


@dataclass(frozen=True)
class TestVectorsInfo:
    __test__ = False  # not a pytest class

    file: str
    prompt: str
    reference: VectorsReference
    eval_text: str | None = None

    def to_json(self) -> dict:
        return {"file": self.file, "prompt": self.prompt, "reference": self.reference.value,
                "eval_text": self.eval_text}

    @classmethod
    def from_json(cls, d: Any, w: str = "test_vectors") -> "TestVectorsInfo":
        ref = need(d, "reference", str, w)
        try:
            reference = VectorsReference(ref)
        except ValueError:
            raise invalid(f"{w}.reference", f"{ref!r} is not one of {[r.value for r in VectorsReference]}") from None
        return cls(need(d, "file", str, w), need(d, "prompt", str, w), reference,
                   need(d, "eval_text", str, w, optional=True))


@dataclass(frozen=True)
class Report:
    """What the target did: precision label, one-line summary, fused attention blocks, the shared
    pass results, the quant read-back; ``details`` keeps target-specific counts."""

    precision: str | None = None
    summary: str | None = None
    attention_blocks_fused: str | None = None
    passes: tuple[PassResult, ...] = ()
    readback: Readback | None = None
    details: JsonMap = field(default_factory=lambda: EMPTY)

    KNOWN = ("precision", "summary", "attention_blocks_fused", "fusion_passes", "readback")

    def to_json(self) -> dict:
        out = thaw(self.details)
        for k in ("precision", "summary", "attention_blocks_fused"):
            if getattr(self, k) is not None:
                out[k] = getattr(self, k)
        if self.passes:
            out["fusion_passes"] = passes_to_json(self.passes)
        if self.readback is not None:
            out["readback"] = self.readback.to_json()
        return out

    @classmethod
    def from_json(cls, d: Any, w: str = "report") -> "Report":
        rb = need(d, "readback", dict, w, optional=True)
        fp = need(d, "fusion_passes", dict, w, optional=True)
        return cls(need(d, "precision", str, w, optional=True), need(d, "summary", str, w, optional=True),
                   need(d, "attention_blocks_fused", str, w, optional=True),
                   passes_from_json(fp, f"{w}.fusion_passes") if fp is not None else (),
                   Readback.from_json(rb, f"{w}.readback") if rb is not None else None,
                   rest(d, cls.KNOWN))


@dataclass(frozen=True)
class Manifest:
    """Everything an app, the ladder and the device runner need to know about a package."""

    target: TargetName
    artifact: str
    precision: str
    source: SourceDigests
    model: ModelSummary
    io: IoSignature
    kv_cache: KvCacheInfo
    runtime: RuntimeInfo
    tolerance: Tolerance
    toolchain: Mapping[str, str]
    tokenizer: TokenizerInfo
    test_vectors: TestVectorsInfo
    quantization: QuantSummary = QuantSummary()
    report: Report = Report()
    files: Mapping[str, str] = field(default_factory=lambda: EMPTY)
    validation: LadderResult | None = None
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self):
        object.__setattr__(self, "toolchain", freeze(dict(self.toolchain)))
        object.__setattr__(self, "files", freeze(dict(sorted(self.files.items()))))

    # ---- file references -------------------------------------------------------------------
    def file_fields(self) -> list[tuple[str, str]]:
        """(field, relpath) for every field that names a file of the package."""
        out = [("artifact", self.artifact), ("test_vectors.file", self.test_vectors.file)]
        out += [(f"tokenizer.files[{i}]", f) for i, f in enumerate(self.tokenizer.files)]
        out += [(f"quantization.{k}", getattr(self.quantization, k)) for k in QuantSummary.FILES
                if getattr(self.quantization, k) is not None]
        out += _nested_files("runtime", self.runtime.details) + _nested_files("io", self.io.details)
        return out

    def check_files(self) -> None:
        """Every file-naming field is a plain relative path and an entry of ``files``."""
        for rel, digest in self.files.items():
            check_relpath(rel, f"files[{rel!r}]")
            if not isinstance(digest, str) or not _SHA256.match(digest):
                raise invalid(f"files[{rel!r}]", f"not a sha256 hex digest: {digest!r}")
        for name, rel in self.file_fields():
            check_relpath(rel, name)
            if rel not in self.files and not any(f.startswith(rel + "/") for f in self.files):
                raise invalid(name, f"{rel!r} is not a file of the package (not in files)")

    def with_files(self, files: Mapping[str, str]) -> "Manifest":
        m = replace(self, files=files)
        m.check_files()
        return m

    def with_validation(self, validation: LadderResult | None) -> "Manifest":
        return replace(self, validation=validation)

    def artifact_files(self) -> list[str]:
        """The artifact and what belongs to it (external data, the files of a directory artifact)."""
        a = self.artifact
        return [f for f in self.files if f == a or f.startswith((a + ".", a + "/"))]

    @property
    def exact(self) -> bool:
        """An fp32 float export: the ladder requires exact greedy tokens and 100% top-1."""
        return self.precision == "fp32" and self.quantization.plan is None

    # ---- JSON ------------------------------------------------------------------------------
    def to_json(self) -> dict:
        out = {
            "schema_version": self.schema_version, "target": self.target.value, "artifact": self.artifact,
            "precision": self.precision, "source": self.source.to_json(), "model": self.model.to_json(),
            "io": self.io.to_json(), "kv_cache": self.kv_cache.to_json(), "runtime": self.runtime.to_json(),
            "tolerance": self.tolerance.to_json(), "toolchain": dict(self.toolchain),
            "tokenizer": self.tokenizer.to_json(), "test_vectors": self.test_vectors.to_json(),
            "quantization": self.quantization.to_json(), "report": self.report.to_json(),
            "files": dict(self.files),
        }
        if self.validation is not None:
            out["validation"] = self.validation.to_json()
        return out

    def dumps(self) -> str:
        return canonical_json(self.to_json())

    @classmethod
    def from_json(cls, d: Any) -> "Manifest":
        if not isinstance(d, Mapping):
            raise invalid("<root>", f"expected an object, got {type(d).__name__}")
        version = d.get("schema_version")
        if version != SCHEMA_VERSION:
            raise BadInputError(f"manifest schema_version {version!r} is not supported (this slmpack reads "
                                f"{SCHEMA_VERSION})", ErrorCode.E_PACKAGE_SCHEMA, details={"field": "schema_version"})
        unknown = sorted(set(d) - set(_FIELDS))
        if unknown:
            raise invalid(unknown[0], "unknown manifest field")
        target = need(d, "target", str, "")
        try:
            tname = TargetName(target)
        except ValueError:
            raise invalid("target", f"{target!r} is not one of {[t.value for t in TargetName]}") from None
        toolchain = need(d, "toolchain", dict, "")
        if not all(isinstance(v, str) for v in toolchain.values()):
            raise invalid("toolchain", "expected {package: version string}")
        files = need(d, "files", dict, "")
        validation = need(d, "validation", dict, "", optional=True)
        m = cls(target=tname, artifact=need(d, "artifact", str, ""), precision=need(d, "precision", str, ""),
                source=SourceDigests.from_json(need(d, "source", dict, "")),
                model=ModelSummary.from_json(need(d, "model", dict, "")),
                io=IoSignature.from_json(need(d, "io", dict, "")),
                kv_cache=KvCacheInfo.from_json(need(d, "kv_cache", dict, "")),
                runtime=RuntimeInfo.from_json(need(d, "runtime", dict, "")),
                tolerance=Tolerance.from_json(need(d, "tolerance", dict, "")),
                toolchain=toolchain, tokenizer=TokenizerInfo.from_json(need(d, "tokenizer", dict, "")),
                test_vectors=TestVectorsInfo.from_json(need(d, "test_vectors", dict, "")),
                quantization=QuantSummary.from_json(need(d, "quantization", dict, "")),
                report=Report.from_json(need(d, "report", dict, "")), files=files,
                validation=LadderResult.from_json(validation) if validation is not None else None)
        m.check_files()
        return m

    @classmethod
    def loads(cls, text: str) -> "Manifest":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise BadInputError(f"manifest: invalid JSON ({e})", ErrorCode.E_PACKAGE_INVALID) from None
        return cls.from_json(data)


_FIELDS = ("schema_version", "target", "artifact", "precision", "source", "model", "io", "kv_cache", "runtime",
           "tolerance", "toolchain", "tokenizer", "test_vectors", "quantization", "report", "files", "validation")


def _nested_files(where: str, details: Any) -> list[tuple[str, str]]:
    """Keys ``file`` / ``*_file`` anywhere in a details block name package files (e.g. the .litertlm bundle)."""
    out: list[tuple[str, str]] = []
    if isinstance(details, Mapping):
        for k, v in details.items():
            if (k == "file" or k.endswith("_file")) and isinstance(v, str):
                out.append((f"{where}.{k}", v))
            else:
                out += _nested_files(f"{where}.{k}", v)
    return out


__all__ = ["Manifest", "SourceDigests", "ModelSummary", "TensorSig", "IoSignature", "KvCacheInfo", "RuntimeInfo",
           "QuantSummary", "TokenizerInfo", "TestVectorsInfo", "Report", "VectorsReference", "SCHEMA_VERSION",
           "MANIFEST_FILE", "check_relpath", "canonical_json"]
