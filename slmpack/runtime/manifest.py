"""The package manifest as one typed, frozen, schema-versioned record (standard library only).

``Manifest.to_json()`` is canonical (``canonical_json``: sorted keys, fixed indentation), so the
same export writes the same bytes. ``Manifest.from_json()`` validates every field and raises
``BadInputError(E_MANIFEST_INVALID)`` naming the field; every field that names a file (artifact,
test vectors, tokenizer files, quant plan files, bundles) must be a plain relative path inside the
package *and* an entry of ``files`` (or, for a directory artifact such as ``model.mlpackage``, the
prefix of entries), so a manifest can never point a runner outside its package.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from .errors import BadInputError, ErrorCode
from .manifest_parts import (SHA256, IoSignature, KvCacheInfo, ModelSummary, QuantSummary, Report, RuntimeInfo,
                             SourceDigests, TensorSig, TestVectorsInfo, TokenizerInfo, VectorsReference, canonical_json,
                             check_relpath)
from .records import EMPTY, LadderResult, TargetName, Tolerance, freeze, invalid, need

SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.json"


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
        check_package_files(self.files, self.file_fields())

    def with_files(self, files: Mapping[str, str]) -> "Manifest":
        m = replace(self, files=files)
        m.check_files()
        return m

    def with_validation(self, validation: LadderResult | None) -> "Manifest":
        return replace(self, validation=validation)

    def artifact_files(self) -> list[str]:
        """The artifact and what belongs to it (external data, the files of a directory artifact)."""
        return artifact_files(self.artifact, self.files)

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
        tname = parse_header(d)
        unknown = sorted(set(d) - set(_FIELDS))
        if unknown:
            raise invalid(unknown[0], "unknown manifest field")
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


def parse_header(d: Any) -> TargetName:
    """A manifest document's schema version (must be this one) and its target."""
    if not isinstance(d, Mapping):
        raise invalid("<root>", f"expected an object, got {type(d).__name__}")
    version = d.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BadInputError(f"manifest schema_version {version!r} is not supported (this slmpack reads "
                            f"{SCHEMA_VERSION})", ErrorCode.E_PACKAGE_SCHEMA, details={"field": "schema_version"})
    target = need(d, "target", str, "")
    try:
        return TargetName(target)
    except ValueError:
        raise invalid("target", f"{target!r} is not one of {[t.value for t in TargetName]}") from None


def check_package_files(files: Mapping[str, str], named: list[tuple[str, str]]) -> None:
    """``files`` maps plain relative paths to sha256 digests; every (field, relpath) in ``named`` is one
    of them (or, for a directory artifact, the prefix of some)."""
    for rel, digest in files.items():
        check_relpath(rel, f"files[{rel!r}]")
        if not isinstance(digest, str) or not SHA256.match(digest):
            raise invalid(f"files[{rel!r}]", f"not a sha256 hex digest: {digest!r}")
    for name, rel in named:
        check_relpath(rel, name)
        if rel not in files and not any(f.startswith(rel + "/") for f in files):
            raise invalid(name, f"{rel!r} is not a file of the package (not in files)")


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


def artifact_files(artifact: str, files: Mapping[str, str]) -> list[str]:
    """``artifact`` and the ``files`` that belong to it (``model.onnx.data``, ``model.mlpackage/...``)."""
    return [f for f in files if f == artifact or f.startswith((artifact + ".", artifact + "/"))]


__all__ = ["artifact_files", "Manifest", "SourceDigests", "ModelSummary", "TensorSig", "IoSignature", "KvCacheInfo", "RuntimeInfo",
           "QuantSummary", "TokenizerInfo", "TestVectorsInfo", "Report", "VectorsReference", "SCHEMA_VERSION",
           "MANIFEST_FILE", "check_relpath", "canonical_json"]
