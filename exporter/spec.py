"""ModelSpec: the architecture facts of a checkpoint, read from config.json only.

Never imports or executes anything named in the config (``auto_map`` is ignored on purpose).
"""
from __future__ import annotations

import dataclasses
import enum
import math
from dataclasses import dataclass, field
from pathlib import Path

from slmpack.errors import BadInputError, UnsupportedError
from slmpack.exporter import families
from slmpack.exporter.deltas import AttentionType, BlockStyle, Deltas, LayerSpec, NormKind, Positions, QKNorm


class Family(str, enum.Enum):
    LLAMA = "llama"      # also SmolLM, TinyLlama (Llama configs)
    MISTRAL = "mistral"
    QWEN2 = "qwen2"
    QWEN3 = "qwen3"
    SMOLLM3 = "smollm3"
    OLMO2 = "olmo2"
    GRANITE = "granite"
    GEMMA = "gemma"
    GEMMA2 = "gemma2"
    GEMMA3 = "gemma3"
    PHI = "phi"
    PHI3 = "phi3"
    GPT2 = "gpt2"
    MIXTRAL = "mixtral"
    GRANITE_MOE = "granitemoe"
    QWEN2_MOE = "qwen2_moe"


# config.json "architectures" / "model_type" values we understand. Explicit, no discovery.
_ARCHITECTURES = {
    "LlamaForCausalLM": Family.LLAMA,
    "MistralForCausalLM": Family.MISTRAL,
    "Qwen2ForCausalLM": Family.QWEN2,
    "Qwen3ForCausalLM": Family.QWEN3,
    "SmolLM3ForCausalLM": Family.SMOLLM3,
    "Olmo2ForCausalLM": Family.OLMO2,
    "GraniteForCausalLM": Family.GRANITE,
    "GemmaForCausalLM": Family.GEMMA,
    "Gemma2ForCausalLM": Family.GEMMA2,
    "Gemma3ForCausalLM": Family.GEMMA3,
    "PhiForCausalLM": Family.PHI,
    "Phi3ForCausalLM": Family.PHI3,
    "GPT2LMHeadModel": Family.GPT2,
    "MixtralForCausalLM": Family.MIXTRAL,
    "GraniteMoeForCausalLM": Family.GRANITE_MOE,
    "Qwen2MoeForCausalLM": Family.QWEN2_MOE,
}
_MODEL_TYPES = {"llama": Family.LLAMA, "mistral": Family.MISTRAL, "qwen2": Family.QWEN2,
                **{t: _ARCHITECTURES[a] for t, a in families.MODEL_TYPES.items()}}
SUPPORTED_ARCHITECTURES = tuple(sorted(_ARCHITECTURES))


class RopeType(str, enum.Enum):
    DEFAULT = "default"
    LINEAR = "linear"
    LLAMA3 = "llama3"
    YARN = "yarn"


@dataclass(frozen=True)
class RopeSpec:
    theta: float
    type: RopeType = RopeType.DEFAULT
    factor: float = 1.0
    original_max_position_embeddings: int | None = None
    low_freq_factor: float = 1.0     # llama3
    high_freq_factor: float = 4.0    # llama3
    beta_fast: float = 32.0          # yarn
    beta_slow: float = 1.0           # yarn
    attention_factor: float | None = None  # yarn
    truncate: bool = True            # yarn

    def inv_freq_and_scale(self, head_dim: int, max_position_embeddings: int) -> tuple[list[float], float]:
        """Inverse frequencies (head_dim/2 floats, float64 math) and the cos/sin scale."""
        dim = head_dim
        base = [self.theta ** (i / dim) for i in range(0, dim, 2)]
        inv = [1.0 / b for b in base]
        if self.type is RopeType.DEFAULT:
            return inv, 1.0
        if self.type is RopeType.LINEAR:
            return [f / self.factor for f in inv], 1.0
        if self.type is RopeType.LLAMA3:
            old = self.original_max_position_embeddings
            low_wl, high_wl = old / self.low_freq_factor, old / self.high_freq_factor
            out = []
            for f in inv:
                wl = 2 * math.pi / f
                if wl < high_wl:
                    out.append(f)
                elif wl > low_wl:
                    out.append(f / self.factor)
                else:
                    s = (old / wl - self.low_freq_factor) / (self.high_freq_factor - self.low_freq_factor)
                    out.append((1 - s) * f / self.factor + s * f)
            return out, 1.0
        # YARN (arXiv:2309.00071), as transformers computes it
        factor = self.factor
        attn = self.attention_factor
        if attn is None:
            attn = 1.0 if factor <= 1 else 0.1 * math.log(factor) + 1.0
        orig = self.original_max_position_embeddings

        def corr_dim(rot: float) -> float:
            return (dim * math.log(orig / (rot * 2 * math.pi))) / (2 * math.log(self.theta))

        low, high = corr_dim(self.beta_fast), corr_dim(self.beta_slow)
        if self.truncate:
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, dim - 1)
        if low == high:
            high += 0.001
        out = []
        for i, f in enumerate(inv):
            ramp = min(max((i - low) / (high - low), 0.0), 1.0)
            extrap = 1 - ramp
            out.append((f / factor) * (1 - extrap) + f * extrap)
        return out, attn


@dataclass(frozen=True)
class ModelSpec:
    family: Family
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope: RopeSpec
    max_position_embeddings: int
    tie_word_embeddings: bool
    attention_bias: bool = False
    mlp_bias: bool = False
    sliding_window: int | None = None
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    architecture: str = ""
    deltas: Deltas = Deltas()
    layers: tuple[LayerSpec, ...] = ()      # per-layer attention facts; () = all full attention
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self):
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
                     "num_kv_heads", "head_dim"):
            if int(getattr(self, name)) <= 0:
                raise BadInputError(f"config.json: {name} must be positive", "E_CONFIG_INVALID")
        if self.num_heads % self.num_kv_heads:
            raise BadInputError(
                f"config.json: num_attention_heads ({self.num_heads}) is not a multiple of "
                f"num_key_value_heads ({self.num_kv_heads})", "E_CONFIG_INVALID")
        if self.layers and len(self.layers) != self.num_layers:
            raise BadInputError("config.json: per-layer facts do not match num_hidden_layers", "E_CONFIG_INVALID")
        if self.deltas.longrope is not None:
            self.deltas.longrope.check(self.rotary_dim)

    @property
    def rotary_dim(self) -> int:
        return self.deltas.rotary_dim or self.head_dim

    def layer(self, i: int) -> LayerSpec:
        """Layer i's attention facts (Llama/Mistral/Qwen2: the global sliding_window, if any)."""
        if self.layers:
            return self.layers[i]
        if self.sliding_window is not None:
            return LayerSpec(attention=AttentionType.SLIDING, window=self.sliding_window)
        return LayerSpec()

    def delta_names(self) -> list[str]:
        """Every way this checkpoint differs from Llama (``slmpack inspect``, the manifest)."""
        out = list(self.deltas.used())
        if self.head_dim * self.num_heads != self.hidden_size:
            out.append(f"head_dim={self.head_dim}")
        if self.attention_bias:
            out.append("qkv_bias")
        nope = [i for i in range(self.num_layers) if not self.layer(i).rope]
        if nope:
            out.append(f"nope_layers={nope}")
        windows = sorted({w for w in self.windows if w is not None})
        for w in windows:
            out.append(f"sliding_window={w} on layers {[i for i, x in enumerate(self.windows) if x == w]}")
        return out

    @property
    def windows(self) -> tuple[int | None, ...]:
        return tuple(self.layer(i).window for i in range(self.num_layers))

    # ---- derived numbers ---------------------------------------------------------------
    @property
    def activation_width(self) -> int:
        """The MLP's per-token activation width for memory estimates (MoE: ``MoESpec.activation_width``)."""
        return self.intermediate_size if self.deltas.moe is None else self.deltas.moe.activation_width(self.hidden_size)

    @property
    def num_parameters(self) -> int:
        """Every weight the checkpoint holds for this spec, each delta counted (tied embeddings once)."""
        return count_parameters(self.vocab_size, self.hidden_size, self.intermediate_size, self.num_layers,
                                self.num_heads, self.num_kv_heads, self.head_dim, self.tie_word_embeddings,
                                self.attention_bias) + delta_parameters(self)

    def kv_cache_bytes(self, context: int, bytes_per_value: int = 4) -> int:
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * context * bytes_per_value

    def to_json(self) -> dict:
        return {
            "family": self.family.value, "architecture": self.architecture,
            "vocab_size": self.vocab_size, "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size, "num_layers": self.num_layers,
            "num_heads": self.num_heads, "num_kv_heads": self.num_kv_heads, "head_dim": self.head_dim,
            "rms_norm_eps": self.rms_norm_eps, "rope_type": self.rope.type.value,
            "rope_theta": self.rope.theta, "rope_factor": self.rope.factor,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings, "attention_bias": self.attention_bias,
            "bos_token_id": self.bos_token_id, "eos_token_ids": list(self.eos_token_ids),
            "num_parameters": self.num_parameters, "deltas": self.delta_names(),
            "activation_width": self.activation_width,
            "sliding_windows": [w for w in self.windows],
        }


def count_parameters(vocab: int, hidden: int, inter: int, layers: int, heads: int, kv_heads: int,
                     head_dim: int, tied: bool, attention_bias: bool = False) -> int:
    """Parameters of a Llama-family decoder (q/k/v/o, gated MLP, two RMSNorms per layer, final
    norm, embeddings + lm_head unless tied; q/k/v biases when ``attention_bias``)."""
    attn = hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2
    if attention_bias:
        attn += (heads + 2 * kv_heads) * head_dim
    per_layer = attn + 3 * hidden * inter + 2 * hidden
    return vocab * hidden * (1 if tied else 2) + layers * per_layer + hidden


def delta_parameters(spec: ModelSpec) -> int:
    """What the deltas add to (or take from) the Llama count of ``count_parameters``."""
    d, h, hd, L = spec.deltas, spec.hidden_size, spec.head_dim, spec.num_layers
    q, kv = spec.num_heads * hd, spec.num_kv_heads * hd
    norms = {BlockStyle.PRE_NORM: 2, BlockStyle.SANDWICH: 4, BlockStyle.POST_NORM: 2, BlockStyle.PARALLEL: 1}[d.block]
    norm_size = 2 * h if d.norm is NormKind.LAYER else h      # LayerNorm: weight + bias
    per_layer = (norms * norm_size - 2 * h) + (h if d.o_bias else 0)
    per_layer += {QKNorm.NONE: 0, QKNorm.PER_HEAD: 2 * hd, QKNorm.FULL_WIDTH: q + kv,
                  QKNorm.LAYER_PER_HEAD: 4 * hd}[d.qk_norm]
    inter = spec.intermediate_size
    if not d.gated_mlp:                                        # up + down, no gate
        per_layer -= h * inter
    if spec.mlp_bias:
        per_layer += (2 * inter if d.gated_mlp else inter) + h
    out = L * per_layer + (norm_size - h)                      # the final norm
    if d.moe is not None:                                      # the dense MLP is replaced by the experts
        out += L * (d.moe.parameters(h) - 3 * h * inter)
    if d.lm_head_bias:
        out += spec.vocab_size
    if d.positions is Positions.LEARNED:
        out += spec.max_position_embeddings * h
    return out


def _rope_from_config(cfg: dict) -> RopeSpec:
    params = dict(cfg.get("rope_parameters") or cfg.get("rope_scaling") or {})
    theta = float(params.get("rope_theta", cfg.get("rope_theta", 10000.0)))
    kind = params.get("rope_type", params.get("type", "default")) or "default"
    try:
        rtype = RopeType(kind)
    except ValueError:
        raise UnsupportedError(
            f"rope type {kind!r} is not supported (supported: {', '.join(t.value for t in RopeType)})",
            "E_ROPE_UNSUPPORTED") from None
    if rtype is RopeType.DEFAULT:
        return RopeSpec(theta=theta)
    if "factor" not in params and rtype is not RopeType.YARN:
        raise BadInputError(f"config.json: rope type {kind!r} needs a 'factor'", "E_CONFIG_INVALID")
    orig = params.get("original_max_position_embeddings")
    if rtype in (RopeType.LLAMA3, RopeType.YARN) and orig is None:
        orig = cfg.get("max_position_embeddings")
    factor = params.get("factor")
    if factor is None:  # yarn without factor: ratio of context lengths
        factor = cfg["max_position_embeddings"] / orig
    return RopeSpec(
        theta=theta, type=rtype, factor=float(factor),
        original_max_position_embeddings=int(orig) if orig is not None else None,
        low_freq_factor=float(params.get("low_freq_factor", 1.0)),
        high_freq_factor=float(params.get("high_freq_factor", 4.0)),
        beta_fast=float(params.get("beta_fast") or 32.0), beta_slow=float(params.get("beta_slow") or 1.0),
        attention_factor=params.get("attention_factor"), truncate=bool(params.get("truncate", True)),
    )


def _eos_ids(value) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, int):
        return (value,)
    return tuple(int(v) for v in value)


def spec_from_config(cfg: dict) -> ModelSpec:
    """Build a ModelSpec from a parsed config.json. Unknown architectures are a typed error."""
    archs = cfg.get("architectures") or []
    family = next((_ARCHITECTURES[a] for a in archs if a in _ARCHITECTURES), None)
    if family is None and not archs:
        family = _MODEL_TYPES.get(cfg.get("model_type", ""))
    if family is None:
        got = ", ".join(archs) or cfg.get("model_type") or "none"
        raise UnsupportedError(
            f"unknown architecture {got}; supported: {', '.join(SUPPORTED_ARCHITECTURES)}",
            "E_ARCH_UNSUPPORTED", details={"supported": list(SUPPORTED_ARCHITECTURES)})
    arch = next((a for a in archs if a in _ARCHITECTURES), None) or families.MODEL_TYPES.get(cfg.get("model_type", ""))
    if arch in families.READERS:
        return _family_spec(family, arch, archs, cfg)
    act = cfg.get("hidden_act", "silu")
    if act not in ("silu", "swish"):
        raise UnsupportedError(f"hidden_act {act!r} is not supported (silu only)", "E_UNSUPPORTED")
    try:
        hidden, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
        head_dim = int(cfg.get("head_dim") or hidden // heads)
        window = cfg.get("sliding_window") if (family is Family.MISTRAL or cfg.get("use_sliding_window")) else None
        return ModelSpec(
            family=family, architecture=archs[0] if archs else family.value,
            vocab_size=int(cfg["vocab_size"]), hidden_size=hidden,
            intermediate_size=int(cfg["intermediate_size"]),
            num_layers=int(cfg["num_hidden_layers"]), num_heads=heads,
            num_kv_heads=int(cfg.get("num_key_value_heads") or heads), head_dim=head_dim,
            rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)), rope=_rope_from_config(cfg),
            max_position_embeddings=int(cfg.get("max_position_embeddings", 2048)),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", family is not Family.MISTRAL)),
            attention_bias=bool(cfg.get("attention_bias", family is Family.QWEN2)),
            mlp_bias=bool(cfg.get("mlp_bias", False)),
            sliding_window=int(window) if window else None,
            bos_token_id=cfg.get("bos_token_id"), eos_token_ids=_eos_ids(cfg.get("eos_token_id")),
        )
    except KeyError as e:
        raise BadInputError(f"config.json is missing required field {e.args[0]!r}", "E_CONFIG_INVALID") from None
    except (TypeError, ValueError) as e:
        raise BadInputError(f"config.json has an invalid value: {e}", "E_CONFIG_INVALID") from None


def _family_spec(family: Family, arch: str, archs: list, cfg: dict) -> ModelSpec:
    reader, tied, qkv_bias, mlp_bias = families.READERS[arch]
    try:
        if family is Family.GPT2:
            common = families.gpt2_common(cfg)
            rope = RopeSpec(theta=10000.0)
        else:
            hidden, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
            eps_key = families.LAYER_NORM_EPS_KEY.get(arch, "rms_norm_eps")
            common = dict(
                vocab_size=int(cfg["vocab_size"]), hidden_size=hidden,
                intermediate_size=int(cfg["intermediate_size"]), num_layers=int(cfg["num_hidden_layers"]),
                num_heads=heads, num_kv_heads=int(cfg.get("num_key_value_heads") or heads),
                head_dim=int(cfg.get("head_dim") or hidden // heads),
                rms_norm_eps=float(cfg.get(eps_key, 1e-6)),
                max_position_embeddings=int(cfg.get("max_position_embeddings", 2048)),
                tie_word_embeddings=bool(cfg.get("tie_word_embeddings", tied)),
                attention_bias=bool(cfg.get(families.QKV_BIAS_KEY.get(arch, "attention_bias"), qkv_bias)),
                mlp_bias=bool(cfg.get("mlp_bias", mlp_bias)))
            rope = _family_rope(cfg)
        deltas, layers = reader(cfg, common["head_dim"])
        if common["attention_bias"] and not deltas.o_bias and arch not in families.QKV_BIAS_KEY:
            # these families' o_proj follows attention_bias
            deltas = dataclasses.replace(deltas, o_bias=True)
        return ModelSpec(family=family, architecture=archs[0] if archs else arch, rope=rope, deltas=deltas,
                         layers=layers, bos_token_id=cfg.get("bos_token_id"),
                         eos_token_ids=_eos_ids(cfg.get("eos_token_id")), **common)
    except KeyError as e:
        raise BadInputError(f"config.json is missing required field {e.args[0]!r}", "E_CONFIG_INVALID") from None
    except (TypeError, ValueError) as e:
        raise BadInputError(f"config.json has an invalid value: {e}", "E_CONFIG_INVALID") from None


def _family_rope(cfg: dict) -> RopeSpec:
    """Global RoPE: Gemma 3 nests it under full_attention; LongRoPE's factors live in Deltas."""
    params = dict(cfg.get("rope_parameters") or cfg.get("rope_scaling") or {})
    if isinstance(params.get("full_attention"), dict):
        params = dict(params["full_attention"])
    if params.get("rope_type", params.get("type")) == "longrope":
        return RopeSpec(theta=float(params.get("rope_theta", cfg.get("rope_theta", 10000.0))))
    return _rope_from_config({**cfg, "rope_parameters": params})


def load_spec(model_dir) -> ModelSpec:
    from slmpack import confine
    from slmpack.exporter.checkpoint import as_root
    from slmpack.exporter.config_checks import check_config

    root = as_root(model_dir)
    if not confine.exists(root, "config.json"):
        raise BadInputError(f"{root.path}: no config.json (not a Hugging Face model directory)",
                            "E_MODEL_DIR_INVALID")
    cfg = confine.read_json(root, "config.json")
    if not isinstance(cfg, dict):
        raise BadInputError(f"{root.path / 'config.json'}: expected a JSON object", "E_CONFIG_INVALID")
    check_config(cfg, str(root.path / "config.json"))
    return spec_from_config(cfg)
