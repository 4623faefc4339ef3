"""Will this encoder fit on that device? Peak memory = weights + activations of one forward pass at
batch × sequence + runtime overhead (no KV cache, no decode loop, so no tok/s bound).

Activations, float32, at the widest point of one layer (runtimes reuse buffers between layers):
the hidden states it keeps live (input, q, k, v, attention context and output, residual: 6 × H),
the attention scores and their softmax (2 × heads × S per token) and the feed-forward
intermediate before and after GELU (2 × I). A fixed-length artifact (LiteRT, ExecuTorch: batch-1
signatures) runs one row at a time at the smallest signature length that holds the sequence.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from slmpack.errors import BadInputError
from slmpack.runtime.encoder_manifest import EncoderManifest

from .fit_verdict import FitVerdict
from .profiles import DeviceProfile

MB = 2**20
F32 = 4


@dataclass(frozen=True)
class EncoderFacts:
    """The numbers of an encoder's ``model`` record (a package's manifest or a model dir's
    EncoderSpec), the artifact's bytes for a package, and its fixed shapes if any."""

    source: str                 # "config" or "package"
    path: str
    num_parameters: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    max_sequence: int
    weight_bytes: int | None = None         # known for packages
    format: str | None = None
    fixed_batch: int | None = None           # batch-1 signatures run row by row
    lengths: tuple[int, ...] | None = None   # fixed sequence lengths (LiteRT / ExecuTorch)

    @classmethod
    def from_model(cls, model: dict, source: str, path: str, **kw) -> "EncoderFacts":
        ints = {}
        for key in ("num_parameters", "hidden_size", "intermediate_size", "num_layers", "num_heads", "max_sequence"):
            v = model.get(key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise BadInputError(f"{path}: encoder model.{key} must be a positive integer, got {v!r}",
                                    "E_MANIFEST_INVALID")
            ints[key] = v
        return cls(source, path, **ints, **kw)


def encoder_facts_from_package(pkg: Path, manifest: EncoderManifest) -> EncoderFacts:
    from .fit import artifact_bytes

    io = manifest.details.get("io") or {}
    lengths = io.get("lengths")
    return EncoderFacts.from_model(manifest.model, "package", str(pkg), weight_bytes=artifact_bytes(pkg, manifest),
                                   format=manifest.target.value,
                                   fixed_batch=io.get("batch") if isinstance(io.get("batch"), int) else None,
                                   lengths=tuple(int(n) for n in lengths) if lengths else None)


def encoder_facts_from_config(model_dir: Path) -> EncoderFacts:
    from slmpack.exporter.encoder.spec import load_encoder_spec

    return EncoderFacts.from_model(load_encoder_spec(model_dir).to_json(), "config", str(model_dir))


@dataclass(frozen=True)
class EncoderFitReport(FitVerdict):
    device: str
    model: str
    batch: int                  # rows of one forward pass as asked
    sequence: int               # tokens per row as asked
    run_batch: int              # what the artifact runs at once (1 for batch-1 signatures)
    run_sequence: int           # the signature length that holds ``sequence``
    bits_per_weight: float
    num_parameters: int
    weights_mb: float
    activations_mb: float
    overhead_mb: float
    needed_mb: float
    available_mb: int
    fits: bool
    format: str | None = None
    format_supported: bool | None = None
    kind: str = "encoder"
    notes: tuple[str, ...] = field(default=())

    def message(self) -> str:
        return (f"{Path(self.model).name} (encoder) at {self.bits_per_weight:g} bits/weight, batch {self.batch} x "
                f"sequence {self.sequence} (runs {self.run_batch} x {self.run_sequence}): needs "
                f"{self.needed_mb:.1f} MB (weights {self.weights_mb:.1f} + activations {self.activations_mb:.1f} + "
                f"runtime {self.overhead_mb:.0f}), {self.device} has {self.available_mb} MB available")


def activation_bytes(facts: EncoderFacts, batch: int, sequence: int) -> int:
    per_token = 6 * facts.hidden_size + 2 * facts.intermediate_size + 2 * facts.num_heads * sequence
    return F32 * batch * sequence * per_token


def estimate_encoder(facts: EncoderFacts, profile: DeviceProfile, sequence: int | None = None,
                     batch: int | None = None, bits: float | None = None, *, fmt: str | None = None) -> EncoderFitReport:
    from .fit import ALLOCATOR_SLACK, RUNTIME_OVERHEAD_MB

    notes = []
    sequence = facts.max_sequence if sequence is None else sequence
    batch = 1 if batch is None else batch
    for name, v in (("sequence", sequence), ("batch", batch)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise BadInputError(f"{name} must be a positive integer, got {v!r}", code="E_FIT_CONTEXT")
    if sequence > facts.max_sequence:
        raise BadInputError(f"sequence {sequence} exceeds the encoder's max sequence {facts.max_sequence}",
                            code="E_FIT_CONTEXT")
    run_seq = next((n for n in sorted(facts.lengths or ()) if n >= sequence), sequence)
    run_batch = min(batch, facts.fixed_batch) if facts.fixed_batch else batch
    if facts.weight_bytes is not None:
        if bits is not None:
            notes.append(f"bits={bits:g} ignored: a package's weight bytes are its artifact's size")
        weight_bytes = facts.weight_bytes
        bits = weight_bytes * 8 / facts.num_parameters
    else:
        bits = 32.0 if bits is None else float(bits)  # encoder packages are fp32
        if not 1 <= bits <= 32:
            raise BadInputError(f"bits per weight must be in [1, 32], got {bits:g}", code="E_FIT_BITS")
        weight_bytes = int(facts.num_parameters * bits / 8)
    act = activation_bytes(facts, run_batch, run_seq)
    fmt = fmt or facts.format
    overhead = RUNTIME_OVERHEAD_MB.get(fmt or "onnx", 100) + ALLOCATOR_SLACK * weight_bytes / MB
    needed = (weight_bytes + act) / MB + overhead
    supported = None if fmt is None else profile.supports(fmt) is not None
    if supported is False:
        notes.append(f"{profile.name} lists no runtime for format {fmt!r}")
    return EncoderFitReport(
        device=profile.name, model=facts.path, batch=batch, sequence=sequence, run_batch=run_batch,
        run_sequence=run_seq, bits_per_weight=round(bits, 3), num_parameters=facts.num_parameters,
        weights_mb=round(weight_bytes / MB, 2), activations_mb=round(act / MB, 2), overhead_mb=round(overhead, 1),
        needed_mb=round(needed, 1), available_mb=profile.memory.app_available_mb,
        fits=needed <= profile.memory.app_available_mb, format=fmt, format_supported=supported, notes=tuple(notes))


__all__ = ["EncoderFacts", "EncoderFitReport", "estimate_encoder", "activation_bytes",
           "encoder_facts_from_package", "encoder_facts_from_config"]
