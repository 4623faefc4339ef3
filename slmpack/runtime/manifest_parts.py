"""The typed sub-records of the package manifest (standard library only); ``manifest.py`` holds
the ``Manifest`` itself. Every record has ``to_json()`` / ``from_json(d, where)``; ``details``
keeps target-specific fields verbatim (read-only)."""
from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from .records import EMPTY, JsonMap, PassResult, Readback, invalid, need, passes_from_json, passes_to_json, rest, thaw

SHA256 = re.compile(r"^[0-9a-f]{64}$")


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
        if not SHA256.match(sha):
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
    """The ``quantization`` block: ``plan is None`` for float packages. A quantized package's plan
    is not in the package: ``plan`` names its JSON in the sidecar ``<package>.plan`` and
    ``plan_sha256`` is that file's digest (the JSON carries its tensors' digest in turn)."""

    plan: str | None = None
    plan_sha256: str | None = None
    recipe_file: str | None = None
    recipe: str | None = None
    readback_passed: bool | None = None
    details: JsonMap = field(default_factory=lambda: EMPTY)          # summary, tensors_by_rule, calibration, config, encoding

    FILES = ("recipe_file",)             # fields naming a file of the package
    NAMES = ("plan", "plan_sha256", "recipe_file", "recipe")

    def to_json(self) -> dict:
        if self.plan is None:
            return {**thaw(self.details), "plan": None}
        return {**thaw(self.details), "plan": self.plan, "plan_sha256": self.plan_sha256,
                "recipe_file": self.recipe_file, "recipe": self.recipe, "readback_passed": self.readback_passed}

    @classmethod
    def from_json(cls, d: Any, w: str = "quantization") -> "QuantSummary":
        return cls(*(need(d, k, str, w, optional=True) for k in cls.NAMES),
                   readback_passed=need(d, "readback_passed", bool, w, optional=True),
                   details=rest(d, (*cls.NAMES, "readback_passed")))


@dataclass(frozen=True)
class TokenizerInfo:
    files: tuple[str, ...] = ()
    details: JsonMap = field(default_factory=lambda: EMPTY)   # e.g. "chat": template source, stop token ids

    def to_json(self) -> dict:
        return {**thaw(self.details), "files": list(self.files)}

    @classmethod
    def from_json(cls, d: Any, w: str = "tokenizer") -> "TokenizerInfo":
        files = need(d, "files", list, w)
        return cls(tuple(check_relpath(f, f"{w}.files[{i}]") for i, f in enumerate(files)), rest(d, ("files",)))


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
