"""Will this model fit on that device, and how fast can it decode at best?

Peak memory = weights at the plan's precision + KV cache at context N + activations + runtime
overhead. Decode speed is memory-bound on these devices, so an upper bound is
``bandwidth / bytes read per generated token`` (every weight once, plus the whole KV cache).

The input is either a Hugging Face model directory (``config.json``, Llama-family fields) with a
bits-per-weight figure, or an exported package (``manifest.json``), whose weight bytes are the
artifact's file sizes: a package's precision is already decided.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from slmpack.config import TraceConfig
from slmpack.errors import BadInputError
from slmpack.exporter.spec import count_parameters  # one formula, shared with ModelSpec

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
    """Architecture numbers the estimate needs (from config.json or a package manifest)."""

    source: str  # "config" or "package"
    path: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    tie_word_embeddings: bool
    max_context: int
    num_parameters: int
    weight_bytes: int | None = None  # known for packages
    kv_bits: int = 32
    format: str | None = None
    notes: tuple[str, ...] = ()


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BadInputError(f"cannot read {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise BadInputError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from exc


def _int_field(cfg: dict, key: str, where: Path) -> int:
    value = cfg.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise BadInputError(f"{where}: field {key!r} must be a positive integer, got {value!r}")
    return value


def facts_from_config(model_dir: Path) -> ModelFacts:
    path = model_dir / "config.json"
    cfg = _read_json(path)
    cfg = cfg.get("text_config", cfg) if isinstance(cfg.get("text_config"), dict) else cfg
    vocab, hidden = _int_field(cfg, "vocab_size", path), _int_field(cfg, "hidden_size", path)
    inter = _int_field(cfg, "intermediate_size", path)
    layers = _int_field(cfg, "num_hidden_layers", path)
    heads = _int_field(cfg, "num_attention_heads", path)
    kv_heads = _int_field(cfg, "num_key_value_heads", path) if "num_key_value_heads" in cfg else heads
    head_dim = _int_field(cfg, "head_dim", path) if cfg.get("head_dim") else hidden // heads
    if heads % kv_heads:
        raise BadInputError(f"{path}: num_attention_heads={heads} is not a multiple of "
                            f"num_key_value_heads={kv_heads}")
    tied = bool(cfg.get("tie_word_embeddings", False))
    max_ctx = cfg.get("max_position_embeddings") or 0
    params = count_parameters(vocab, hidden, inter, layers, heads, kv_heads, head_dim, tied,
                              bool(cfg.get("attention_bias", False)))
    return ModelFacts("config", str(model_dir), vocab, hidden, inter, layers, heads, kv_heads,
                      head_dim, tied, int(max_ctx), params)


def _artifact_bytes(pkg: Path, manifest: dict) -> int:
    artifact = manifest.get("artifact")
    if not isinstance(artifact, str) or not artifact:
        raise BadInputError(f"{pkg / 'manifest.json'}: missing 'artifact'")
    names = [n for n in manifest.get("files", {}) if n == artifact or n.startswith(artifact + ".")
             or n.startswith(artifact + "/")]
    total = 0
    for name in names or [artifact]:
        f = pkg / name
        if not f.is_file():
            raise BadInputError(f"package {pkg}: artifact file {name} is missing",
                                code="E_PACKAGE_INTEGRITY")
        total += f.stat().st_size
    return total


def facts_from_package(pkg: Path) -> ModelFacts:
    path = pkg / "manifest.json"
    manifest = _read_json(path)
    model = manifest.get("model")
    if not isinstance(model, dict):
        raise BadInputError(f"{path}: missing the 'model' section")
    vocab, hidden = _int_field(model, "vocab_size", path), _int_field(model, "hidden_size", path)
    layers, kv_heads = _int_field(model, "num_layers", path), _int_field(model, "num_kv_heads", path)
    head_dim = _int_field(model, "head_dim", path)
    notes = []
    heads = model.get("num_heads") or model.get("num_attention_heads") or max(hidden // head_dim, kv_heads)
    inter = model.get("intermediate_size")
    if not inter:
        inter = 4 * hidden
        notes.append("intermediate_size not in manifest: activations assume 4 x hidden_size")
    tied = model.get("tie_word_embeddings")
    if tied is None:
        tied = True
        notes.append("tie_word_embeddings not in manifest: bytes/token counts the embedding table once")
    params = model.get("num_parameters") or count_parameters(vocab, hidden, inter, layers, heads,
                                                             kv_heads, head_dim, bool(tied))
    kv_dtype = (manifest.get("kv_cache") or {}).get("dtype", "float32")
    return ModelFacts("package", str(pkg), vocab, hidden, int(inter), layers, int(heads), kv_heads,
                      head_dim, bool(tied), int(model.get("max_context") or 0), int(params),
                      weight_bytes=_artifact_bytes(pkg, manifest), kv_bits=KV_BITS.get(kv_dtype, 32),
                      format=manifest.get("target"), notes=tuple(notes))


def load_facts(path: str | Path) -> ModelFacts:
    path = Path(path)
    if (path / "manifest.json").is_file():
        return facts_from_package(path)
    if (path / "config.json").is_file():
        return facts_from_config(path)
    raise BadInputError(f"{path} has neither manifest.json (a package) nor config.json (a model dir)")


@dataclass(frozen=True)
class FitReport:
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

    def to_json(self) -> dict:
        return asdict(self)

    def message(self) -> str:
        return (f"{Path(self.model).name} at {self.bits_per_weight:g} bits/weight, context "
                f"{self.context}: needs {self.needed_mb:.0f} MB (weights {self.weights_mb:.0f} + KV "
                f"{self.kv_cache_mb:.0f} + activations {self.activations_mb:.0f} + runtime "
                f"{self.overhead_mb:.0f}), {self.device} has {self.available_mb} MB available")

    def raise_if_too_big(self) -> "FitReport":
        if not self.fits:
            raise BadInputError(f"does not fit: {self.message()}", code="E_FIT_TOO_BIG",
                                details=self.to_json())
        return self


def estimate(facts: ModelFacts, profile: DeviceProfile, context: int | None = None,
             bits: float | None = None, *, kv_bits: int | None = None,
             prefill_tokens: int | None = None, fmt: str | None = None) -> FitReport:
    notes = list(facts.notes)
    if not context:  # a package: its own context; a model: what `slmpack export` would use by default
        context = (facts.max_context if facts.source == "package" and facts.max_context
                   else TraceConfig().resolved(facts.max_context or TraceConfig.DEFAULT_CONTEXT).max_context)
    if not isinstance(context, int) or context < 1:
        raise BadInputError(f"context must be a positive integer, got {context!r}", code="E_FIT_CONTEXT")
    if facts.max_context and context > facts.max_context:
        raise BadInputError(f"context {context} exceeds the model's max context {facts.max_context}",
                            code="E_FIT_CONTEXT")
    if facts.weight_bytes is not None:
        if bits is not None:
            notes.append(f"bits={bits:g} ignored: a package's weight bytes are its artifact's size")
        weight_bytes = facts.weight_bytes
        bits = weight_bytes * 8 / facts.num_parameters
    else:
        bits = 16.0 if bits is None else float(bits)
        if not 1 <= bits <= 32:
            raise BadInputError(f"bits per weight must be in [1, 32], got {bits:g}", code="E_FIT_BITS")
        weight_bytes = int(facts.num_parameters * bits / 8)
    kv_bits = kv_bits or facts.kv_bits
    kv_bytes = 2 * facts.num_layers * facts.num_kv_heads * facts.head_dim * context * kv_bits // 8
    s = min(context, prefill_tokens or DEFAULT_PREFILL_CHUNK)
    q_kv = (facts.num_heads + 2 * facts.num_kv_heads) * facts.head_dim
    per_token = 2 * facts.hidden_size + max(3 * facts.intermediate_size, facts.num_heads * context + q_kv)
    act_bytes = F32 * s * (per_token + facts.vocab_size)  # logits for every prompt position
    fmt = fmt or facts.format
    overhead = RUNTIME_OVERHEAD_MB.get(fmt or "onnx", 100) + ALLOCATOR_SLACK * weight_bytes / MB
    needed = (weight_bytes + kv_bytes + act_bytes) / MB + overhead
    embed_bytes = facts.vocab_size * facts.hidden_size * bits / 8
    read_per_token = int(weight_bytes - (0 if facts.tie_word_embeddings else embed_bytes) + kv_bytes)
    available = profile.memory.app_available_mb
    supported = None if fmt is None else profile.supports(fmt) is not None
    if supported is False:
        notes.append(f"{profile.name} lists no runtime for format {fmt!r}")
    return FitReport(
        device=profile.name, model=facts.path, context=context, bits_per_weight=round(bits, 3),
        num_parameters=facts.num_parameters, weights_mb=round(weight_bytes / MB, 1),
        kv_cache_mb=round(kv_bytes / MB, 1), activations_mb=round(act_bytes / MB, 1),
        overhead_mb=round(overhead, 1), needed_mb=round(needed, 1), available_mb=available,
        fits=needed <= available, bytes_per_token=read_per_token,
        decode_tok_s_upper=round(profile.memory.bandwidth_gbs * 1e9 / max(read_per_token, 1), 2),
        bandwidth_gbs=profile.memory.bandwidth_gbs, bandwidth_source=profile.memory.bandwidth_source,
        format=fmt, format_supported=supported, notes=tuple(notes))


def fit_check(path: str | Path, device: str | DeviceProfile, context: int | None = None,
              bits: float | None = None, *, strict: bool = True, profile_dirs=(), **kwargs) -> FitReport:
    """Estimate ``path`` (model dir or package) on ``device``. ``strict`` raises E_FIT_TOO_BIG."""
    report = estimate(load_facts(path), get_profile(device, profile_dirs), context, bits, **kwargs)
    return report.raise_if_too_big() if strict else report


def device_context(path: str | Path, device: str | DeviceProfile, bits: float | None = None, *,
                   profile_dirs=()) -> int:
    """The export default context (min(4096, max_position_embeddings)), halved until the model fits
    ``device`` (never below 256 or the default itself if smaller). If even that does not fit, the
    default is returned and ``fit_check`` reports why."""
    facts, profile = load_facts(path), get_profile(device, profile_dirs)
    context = TraceConfig().resolved(facts.max_context or TraceConfig.DEFAULT_CONTEXT).max_context
    floor = min(256, context)
    while context > floor and not estimate(facts, profile, context, bits).fits:
        context = max(floor, context // 2)
    return context
