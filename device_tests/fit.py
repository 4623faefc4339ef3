"""Will this model fit on that device, and how fast can it decode at best?

Peak memory = weights at the plan's precision + KV cache at context N + activations + runtime
overhead. Decode speed is memory-bound on these devices, so an upper bound is
``bandwidth / bytes read per generated token`` (every weight once, plus the whole KV cache).

The input is either a Hugging Face model directory (its ModelSpec, every family) with a
bits-per-weight figure, or an exported package (``manifest.json``), whose weight bytes are the
artifact's file sizes: a package's precision is already decided.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from slmpack.config import TraceConfig
from slmpack.errors import BadInputError
from slmpack.exporter.gguf.reader import is_gguf
from slmpack.exporter.spec import load_spec
from slmpack.runtime.encoder_manifest import EncoderManifest
from slmpack.runtime.integrity import read_typed
from slmpack.runtime.manifest import ModelSummary

from .fit_verdict import FitVerdict
from .fit_encoder import (EncoderFacts, EncoderFitReport, encoder_facts_from_config, encoder_facts_from_package,
                          estimate_encoder)
from .profiles import DeviceProfile, get_profile

MB = 2**20
F32 = 4
# Resident cost of the runtime itself + the Python runner (interpreter, numpy), in MB. Estimates.
RUNTIME_OVERHEAD_MB = {"onnx": 110, "tflite": 60, "executorch": 50, "coreml": 80}
ALLOCATOR_SLACK = 0.05  # arena rounding / fragmentation, as a fraction of weight bytes
DEFAULT_PREFILL_CHUNK = 512
KV_BITS = {"float32": 32, "float16": 16, "bfloat16": 16, "int8": 8}


@dataclass(frozen=True)
class ModelFacts:
    """What the estimate needs: the numbers of the manifest's typed ``model`` record (a package's
    own, or built from the model dir's ModelSpec), plus the package's weight bytes and KV dtype."""

    source: str  # "config" or "package"
    path: str
    model: ModelSummary
    intermediate_size: int          # the MLP's activation width per token (MoE: every expert's)
    tie_word_embeddings: bool
    weight_bytes: int | None = None  # known for packages
    kv_bits: int = 32
    format: str | None = None
    notes: tuple[str, ...] = ()


def facts_from_config(model_dir: Path) -> ModelFacts:
    """The model dir's ModelSpec (config.json read confined and checked, every family), or a
    ``.gguf`` file's (from its metadata; no tensor is read)."""
    if is_gguf(model_dir):
        from slmpack.exporter.gguf.source import gguf_spec

        spec = gguf_spec(model_dir)
    else:
        spec = load_spec(model_dir)
    summary = ModelSummary.from_json({**spec.to_json(), "max_context": spec.max_position_embeddings,
                                      "max_prompt": spec.max_position_embeddings})
    return ModelFacts("config", str(model_dir), summary, spec.activation_width, spec.tie_word_embeddings)


def artifact_bytes(pkg: Path, manifest) -> int:
    """The size of the artifact and what belongs to it (``manifest``: decoder or encoder record)."""
    total = 0
    for name in manifest.artifact_files() or [manifest.artifact]:
        f = pkg / name
        if f.is_symlink() or not f.is_file():
            raise BadInputError(f"package {pkg}: artifact file {name} is missing", code="E_PACKAGE_INTEGRITY")
        total += f.stat().st_size
    return total


def facts_from_package(pkg: Path) -> ModelFacts | EncoderFacts:
    """The package's typed manifest; its weight bytes are its artifact files' sizes."""
    manifest = read_typed(pkg)
    if isinstance(manifest, EncoderManifest):
        return encoder_facts_from_package(pkg, manifest)
    notes, details = [], manifest.model.details
    inter = details.get("activation_width", details.get("intermediate_size"))   # MoE: the dense experts' width
    if not isinstance(inter, int) or inter < 1:
        inter = 4 * manifest.model.hidden_size
        notes.append("intermediate_size not in manifest: activations assume 4 x hidden_size")
    tied = details.get("tie_word_embeddings")
    if not isinstance(tied, bool):
        tied = True
        notes.append("tie_word_embeddings not in manifest: bytes/token counts the embedding table once")
    return ModelFacts("package", str(pkg), manifest.model, inter, tied, weight_bytes=artifact_bytes(pkg, manifest),
                      kv_bits=KV_BITS.get(manifest.kv_cache.dtype, 32), format=manifest.target.value,
                      notes=tuple(notes))


def load_facts(path: str | Path) -> ModelFacts | EncoderFacts:
    from slmpack.exporter.encoder.spec import is_encoder_dir

    path = Path(path)
    if (path / "manifest.json").is_file():
        return facts_from_package(path)
    if is_encoder_dir(path):  # BERT / DistilBERT / sentence-transformers
        return encoder_facts_from_config(path)
    if (path / "config.json").is_file() or is_gguf(path):
        return facts_from_config(path)
    raise BadInputError(f"{path} has neither manifest.json (a package) nor config.json (a model dir)")


@dataclass(frozen=True)
class FitReport(FitVerdict):
    device: str
    model: str
    context: int
    bits_per_weight: float
    num_parameters: int
    weights_mb: float
    kv_cache_mb: float
    activations_mb: float
    overhead_mb: float
    needed_mb: float
    available_mb: int
    fits: bool
    bytes_per_token: int
    decode_tok_s_upper: float
    bandwidth_gbs: float
    bandwidth_source: str
    format: str | None = None
    format_supported: bool | None = None
    notes: tuple[str, ...] = field(default=())

    def message(self) -> str:
        return (f"{Path(self.model).name} at {self.bits_per_weight:g} bits/weight, context "
                f"{self.context}: needs {self.needed_mb:.0f} MB (weights {self.weights_mb:.0f} + KV "
                f"{self.kv_cache_mb:.0f} + activations {self.activations_mb:.0f} + runtime "
                f"{self.overhead_mb:.0f}), {self.device} has {self.available_mb} MB available")


def estimate(facts: ModelFacts, profile: DeviceProfile, context: int | None = None,
             bits: float | None = None, *, kv_bits: int | None = None,
             prefill_tokens: int | None = None, fmt: str | None = None) -> FitReport:
    notes = list(facts.notes)
    if not context:  # a package: its own context; a model: what `slmpack export` would use by default
        context = (facts.model.max_context if facts.source == "package" and facts.model.max_context
                   else TraceConfig().resolved(facts.model.max_context or TraceConfig.DEFAULT_CONTEXT).max_context)
    if not isinstance(context, int) or context < 1:
        raise BadInputError(f"context must be a positive integer, got {context!r}", code="E_FIT_CONTEXT")
    if facts.model.max_context and context > facts.model.max_context:
        raise BadInputError(f"context {context} exceeds the model's max context {facts.model.max_context}",
                            code="E_FIT_CONTEXT")
    if facts.weight_bytes is not None:
        if bits is not None:
            notes.append(f"bits={bits:g} ignored: a package's weight bytes are its artifact's size")
        weight_bytes = facts.weight_bytes
        bits = weight_bytes * 8 / facts.model.num_parameters
    else:
        bits = 16.0 if bits is None else float(bits)
        if not 1 <= bits <= 32:
            raise BadInputError(f"bits per weight must be in [1, 32], got {bits:g}", code="E_FIT_BITS")
        weight_bytes = int(facts.model.num_parameters * bits / 8)
    kv_bits = kv_bits or facts.kv_bits
    kv_bytes = 2 * facts.model.num_layers * facts.model.num_kv_heads * facts.model.head_dim * context * kv_bits // 8
    s = min(context, prefill_tokens or DEFAULT_PREFILL_CHUNK)
    q_kv = (facts.model.num_heads + 2 * facts.model.num_kv_heads) * facts.model.head_dim
    per_token = 2 * facts.model.hidden_size + max(3 * facts.intermediate_size, facts.model.num_heads * context + q_kv)
    act_bytes = F32 * s * (per_token + facts.model.vocab_size)  # logits for every prompt position
    fmt = fmt or facts.format
    overhead = RUNTIME_OVERHEAD_MB.get(fmt or "onnx", 100) + ALLOCATOR_SLACK * weight_bytes / MB
    needed = (weight_bytes + kv_bytes + act_bytes) / MB + overhead
    embed_bytes = facts.model.vocab_size * facts.model.hidden_size * bits / 8
    read_per_token = int(weight_bytes - (0 if facts.tie_word_embeddings else embed_bytes) + kv_bytes)
    available = profile.memory.app_available_mb
    supported = None if fmt is None else profile.supports(fmt) is not None
    if supported is False:
        notes.append(f"{profile.name} lists no runtime for format {fmt!r}")
    return FitReport(
        device=profile.name, model=facts.path, context=context, bits_per_weight=round(bits, 3),
        num_parameters=facts.model.num_parameters, weights_mb=round(weight_bytes / MB, 1),
        kv_cache_mb=round(kv_bytes / MB, 1), activations_mb=round(act_bytes / MB, 1),
        overhead_mb=round(overhead, 1), needed_mb=round(needed, 1), available_mb=available,
        fits=needed <= available, bytes_per_token=read_per_token,
        decode_tok_s_upper=round(profile.memory.bandwidth_gbs * 1e9 / max(read_per_token, 1), 2),
        bandwidth_gbs=profile.memory.bandwidth_gbs, bandwidth_source=profile.memory.bandwidth_source,
        format=fmt, format_supported=supported, notes=tuple(notes))


def fit_check(path: str | Path, device: str | DeviceProfile, context: int | None = None,
              bits: float | None = None, *, strict: bool = True, profile_dirs=(), batch: int | None = None,
              **kwargs) -> FitReport | EncoderFitReport:
    """Estimate ``path`` (model dir or package) on ``device``. ``strict`` raises E_FIT_TOO_BIG.
    Encoders: ``context`` is the sequence length (default: the encoder's max) and ``batch`` the rows
    of one forward pass (default 1); decoders take no ``batch``."""
    facts, profile = load_facts(path), get_profile(device, profile_dirs)
    if isinstance(facts, EncoderFacts):
        report = estimate_encoder(facts, profile, context, batch, bits, **kwargs)
    elif batch is not None:
        raise BadInputError("--batch is for encoder packages and models; a decoder's fit is per context",
                            code="E_FIT_CONTEXT")
    else:
        report = estimate(facts, profile, context, bits, **kwargs)
    return report.raise_if_too_big() if strict else report


def device_context(path: str | Path, device: str | DeviceProfile, bits: float | None = None, *,
                   profile_dirs=()) -> int:
    """The export default context (min(4096, max_position_embeddings)), halved until the model fits
    ``device`` (never below 256 or the default itself if smaller). If even that does not fit, the
    default is returned and ``fit_check`` reports why."""
    facts, profile = load_facts(path), get_profile(device, profile_dirs)
    if isinstance(facts, EncoderFacts):  # an encoder has no KV cache: its sequence bound is the model's
        return facts.max_sequence
    context = TraceConfig().resolved(facts.model.max_context or TraceConfig.DEFAULT_CONTEXT).max_context
    floor = min(256, context)
    while context > floor and not estimate(facts, profile, context, bits).fits:
        context = max(floor, context // 2)
    return context
