"""The manifest of an encoder package (BERT / DistilBERT / sentence-transformers) as a typed,
frozen record (standard library only). It shares the decoder manifest's file rules: every field
that names a file is a plain relative path and an entry of ``files``. Fields the runtime does not
read (source, model, io, runtime, report, toolchain, validation) are kept verbatim in ``details``
so ``to_json`` returns the document it was read from."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Mapping

from .manifest import SCHEMA_VERSION, artifact_files, check_package_files, parse_header
from .manifest_parts import TokenizerInfo
from .records import EMPTY, JsonMap, TargetName, Tolerance, freeze, invalid, need, rest, thaw


class EncoderOutput(str, enum.Enum):
    SENTENCE_EMBEDDING = "sentence_embedding"
    LOGITS = "logits"
    LAST_HIDDEN_STATE = "last_hidden_state"


@dataclass(frozen=True)
class EncoderInfo:
    output: EncoderOutput
    inputs: tuple[str, ...]
    max_sequence: int
    max_batch: int | None
    id2label: tuple[str, ...] = ()
    pooling: str | None = None
    normalize: bool = False

    def to_json(self) -> dict:
        return {"output": self.output.value, "inputs": list(self.inputs), "max_sequence": self.max_sequence,
                "max_batch": self.max_batch, "id2label": list(self.id2label), "pooling": self.pooling,
                "normalize": self.normalize}

    @classmethod
    def from_json(cls, d: Any, w: str = "encoder") -> "EncoderInfo":
        out = need(d, "output", str, w)
        try:
            output = EncoderOutput(out)
        except ValueError:
            raise invalid(f"{w}.output", f"{out!r} is not one of {[o.value for o in EncoderOutput]}") from None
        inputs = need(d, "inputs", list, w)
        if "input_ids" not in inputs or not all(i in ("input_ids", "attention_mask", "token_type_ids") for i in inputs):
            raise invalid(f"{w}.inputs", f"unexpected encoder inputs {inputs!r}")
        seq = need(d, "max_sequence", int, w)
        batch = need(d, "max_batch", int, w, optional=True)
        if seq < 1 or (batch is not None and batch < 1):
            raise invalid(w, "max_sequence and max_batch must be >= 1")
        labels = need(d, "id2label", list, w, optional=True, default=[])
        if not all(isinstance(x, str) for x in labels):
            raise invalid(f"{w}.id2label", "expected a list of label strings")
        return cls(output, tuple(inputs), seq, batch, tuple(labels), need(d, "pooling", str, w, optional=True),
                   bool(need(d, "normalize", bool, w, optional=True, default=False)))


@dataclass(frozen=True)
class EncoderManifest:
    target: TargetName
    artifact: str
    encoder: EncoderInfo
    tolerance: Tolerance
    tokenizer: TokenizerInfo
    vectors_file: str
    pad_token_id: int
    files: Mapping[str, str] = field(default_factory=lambda: EMPTY)
    details: JsonMap = field(default_factory=lambda: EMPTY)   # source, model, io, runtime, report, ...

    KNOWN = ("schema_version", "target", "artifact", "encoder", "tolerance", "tokenizer", "files")

    def check_files(self) -> None:
        named = [("artifact", self.artifact), ("test_vectors.file", self.vectors_file)]
        check_package_files(self.files, named + [(f"tokenizer.files[{i}]", f)
                                                 for i, f in enumerate(self.tokenizer.files)])

    def artifact_files(self) -> list[str]:
        """The artifact and what belongs to it (external data)."""
        return artifact_files(self.artifact, self.files)

    @property
    def model(self) -> dict:
        """The manifest's ``model`` record as written (the EncoderSpec's facts)."""
        return thaw(self.details.get("model") or {})

    def to_json(self) -> dict:
        return {**thaw(self.details), "schema_version": SCHEMA_VERSION, "target": self.target.value,
                "artifact": self.artifact, "encoder": self.encoder.to_json(),
                "tolerance": {"atol": self.tolerance.atol, "rtol": self.tolerance.rtol},
                "tokenizer": self.tokenizer.to_json(), "files": dict(self.files)}

    @classmethod
    def from_json(cls, d: Any) -> "EncoderManifest":
        tname = parse_header(d)
        model = need(d, "model", dict, "")
        pad = need(model, "pad_token_id", int, "model")
        m = cls(tname, need(d, "artifact", str, ""), EncoderInfo.from_json(need(d, "encoder", dict, "")),
                Tolerance.from_json(need(d, "tolerance", dict, "")),
                TokenizerInfo.from_json(need(d, "tokenizer", dict, "")),
                need(need(d, "test_vectors", dict, ""), "file", str, "test_vectors"), pad,
                freeze(dict(sorted(need(d, "files", dict, "").items()))), rest(d, cls.KNOWN))
        m.check_files()
        return m


def is_encoder_document(doc: Any) -> bool:
    return isinstance(doc, Mapping) and "encoder" in doc
