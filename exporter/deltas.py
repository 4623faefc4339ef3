"""Every way a supported decoder differs from Llama, as typed fields read from config.json only.

``Deltas`` is the declarative part of a ``ModelSpec``: the reference module (``reference.py`` and
``blocks.py``) implements each field once, and the weight map (``weight_map.py``) renames fused or
Conv1D checkpoint tensors. A Llama/Mistral/Qwen2 config gives ``Deltas()`` (all defaults), so those
families build exactly the module they always did.
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

from slmpack.errors import BadInputError, UnsupportedError


class NormKind(str, enum.Enum):
    RMS = "rms"
    LAYER = "layer_norm"        # LayerNorm with weight and bias (Phi-2, GPT-2)


class Activation(str, enum.Enum):
    SILU = "silu"
    GELU_TANH = "gelu_tanh"     # gelu_pytorch_tanh, gelu_new: the tanh approximation
    GELU = "gelu"               # exact erf GELU


class QKNorm(str, enum.Enum):
    NONE = "none"
    PER_HEAD = "per_head"       # RMSNorm over head_dim after the head split (Qwen3, Gemma 3)
    FULL_WIDTH = "full_width"   # RMSNorm over the whole projection (OLMo 2)
    LAYER_PER_HEAD = "layer_norm_per_head"  # LayerNorm over head_dim (Phi-2 qk_layernorm)


class BlockStyle(str, enum.Enum):
    PRE_NORM = "pre_norm"       # x + attn(norm(x)); x + mlp(norm(x))          (Llama)
    SANDWICH = "sandwich"       # x + post(attn(pre(x))); x + post(mlp(pre(x))) (Gemma 2/3)
    POST_NORM = "post_norm"     # x + norm(attn(x)); x + norm(mlp(x))           (OLMo 2)
    PARALLEL = "parallel"       # h = norm(x); x + attn(h) + mlp(h)            (Phi-2)


class Positions(str, enum.Enum):
    ROPE = "rope"
    LEARNED = "learned"         # absolute position embeddings added to the tokens (GPT-2)


class WeightLayout(str, enum.Enum):
    HF_LLAMA = "hf_llama"       # q/k/v/o, gate/up/down by name
    PHI = "phi"                 # dense, fc1/fc2, final_layernorm, lm_head bias
    PHI3_FUSED = "phi3_fused"   # qkv_proj, gate_up_proj
    GPT2_CONV1D = "gpt2_conv1d" # transformer.h.*, c_attn (fused, [in, out]), c_fc, c_proj


class ExpertLayout(str, enum.Enum):
    MIXTRAL = "mixtral"              # block_sparse_moe.gate, experts.N.w1 (gate) / w3 (up) / w2 (down)
    GRANITE_FUSED = "granite_fused"  # block_sparse_moe.router.layer, input_linear [E, 2F, D] (gate | up),
                                     # output_linear [E, D, F]
    QWEN2_MOE = "qwen2_moe"          # mlp.gate, mlp.experts.N.{gate,up,down}_proj, mlp.shared_expert(_gate)


@dataclass(frozen=True)
class MoESpec:
    """A sparse mixture-of-experts MLP in every layer (``moe.py`` implements it).

    A linear router scores ``num_experts`` gated MLPs (the family's activation, ``expert_size``
    wide); each token takes the ``top_k`` largest softmax probabilities (ties as ``torch.topk``),
    renormalized over the k when ``norm_topk_prob`` (Mixtral; Granite's softmax over the top-k
    logits is the same number), and sums those experts' outputs weighted by them. A shared expert
    (Qwen2-MoE) is one more gated MLP on every token, scaled by sigmoid(x . w_gate), added to that.
    Config fields are named in the errors by the ``keys`` the family's config.json spells them with.
    """
    num_experts: int
    top_k: int
    expert_size: int
    norm_topk_prob: bool
    layout: ExpertLayout
    shared_expert_size: int = 0         # 0: no shared expert
    keys: tuple[str, str] = field(default=("num_local_experts", "intermediate_size"), compare=False)
    # ^ the config's names of num_experts and expert_size (errors name them)

    def __post_init__(self):
        checks = ((self.keys[0], self.num_experts >= 1, "must be >= 1"),
                  ("num_experts_per_tok", 1 <= self.top_k <= self.num_experts,
                   f"({self.top_k}) must be in 1..{self.num_experts}"),
                  (self.keys[1], self.expert_size >= 1, "must be >= 1"),
                  ("shared_expert_intermediate_size", self.shared_expert_size >= 0, "must be >= 0"))
        for name, ok, why in checks:
            if not ok:
                raise BadInputError(f"config.json: {name} {why}", "E_CONFIG_INVALID", details={"field": name})

    def parameters(self, hidden: int) -> int:
        """Weights of one layer's MoE MLP: router, every expert's gate/up/down, the shared expert + its gate."""
        shared = 3 * hidden * self.shared_expert_size + hidden if self.shared_expert_size else 0
        return self.num_experts * (hidden + 3 * hidden * self.expert_size) + shared

    def activation_width(self, hidden: int) -> int:
        """Per token, the dense evaluation holds every expert's gate / up / product (3 x E x F) and
        output (E x D), plus the shared expert's: as one ``3 x width`` figure for the fit check."""
        return -(-(3 * (self.num_experts * self.expert_size + self.shared_expert_size)
                   + self.num_experts * hidden) // 3)

    def describe(self) -> str:
        shared = f" + shared expert ({self.shared_expert_size} wide)" if self.shared_expert_size else ""
        renorm = " renormalized" if self.norm_topk_prob else ""
        return f"{self.num_experts} experts ({self.expert_size} wide) top-{self.top_k}{renorm}{shared}"


class AttentionType(str, enum.Enum):
    FULL = "full_attention"
    SLIDING = "sliding_attention"


@dataclass(frozen=True)
class LayerSpec:
    """Per-layer attention facts: full or sliding window W, RoPE table, or no positions (NoPE)."""
    attention: AttentionType = AttentionType.FULL
    window: int | None = None
    rope: bool = True
    local_rope: bool = False    # the sliding layers' own RoPE table (Gemma 3 local base)

    def __post_init__(self):
        if (self.attention is AttentionType.SLIDING) != (self.window is not None):
            raise BadInputError("config.json: a sliding_attention layer needs sliding_window",
                                "E_CONFIG_INVALID", details={"field": "sliding_window"})
        if self.window is not None and self.window <= 0:
            raise BadInputError("config.json: sliding_window must be positive", "E_CONFIG_INVALID",
                                details={"field": "sliding_window"})


@dataclass(frozen=True)
class LongRope:
    short_factor: tuple[float, ...]
    long_factor: tuple[float, ...]
    original_max_position_embeddings: int
    attention_factor: float

    def check(self, rotary_dim: int) -> None:
        for name in ("short_factor", "long_factor"):
            if len(getattr(self, name)) != rotary_dim // 2:
                raise BadInputError(f"config.json: rope {name} has {len(getattr(self, name))} entries, "
                                    f"rotary dim {rotary_dim} needs {rotary_dim // 2}", "E_CONFIG_INVALID",
                                    details={"field": name})


@dataclass(frozen=True)
class Deltas:
    norm: NormKind = NormKind.RMS
    norm_offset: float = 0.0            # Gemma: the norm multiplies by (1 + w); folded into w at load
    qk_norm: QKNorm = QKNorm.NONE       # always applied before RoPE (as every supported family does)
    block: BlockStyle = BlockStyle.PRE_NORM
    activation: Activation = Activation.SILU
    gated_mlp: bool = True
    embedding_scale: float = 1.0        # Gemma sqrt(hidden), Granite embedding_multiplier
    attention_scale: float | None = None  # None: head_dim ** -0.5
    residual_multiplier: float = 1.0    # Granite
    logits_divisor: float = 1.0         # Granite logits_scaling
    attn_softcap: float | None = None   # Gemma 2: tanh(s / c) * c on attention scores
    final_softcap: float | None = None  # Gemma 2: on the logits
    rotary_dim: int | None = None       # partial rotary (Phi-2, Phi-4-mini); None = head_dim
    longrope: LongRope | None = None    # Phi-3: short/long factors switched at original_max
    positions: Positions = Positions.ROPE
    weights: WeightLayout = WeightLayout.HF_LLAMA
    o_bias: bool = False                # Phi-2 dense, GPT-2 c_proj
    lm_head_bias: bool = False          # Phi-2
    local_rope_theta: float | None = None  # Gemma 3 sliding layers' RoPE base
    moe: MoESpec | None = None          # Mixtral, Granite MoE: the MLP is a sparse mixture of experts

    def __post_init__(self):
        for name in ("embedding_scale", "residual_multiplier", "logits_divisor"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v != 0):
                raise BadInputError(f"config.json: {name} must be a finite non-zero number", "E_CONFIG_INVALID",
                                    details={"field": name})
        for name in ("attn_softcap", "final_softcap", "attention_scale"):
            v = getattr(self, name)
            if v is not None and not (math.isfinite(v) and v > 0):
                raise BadInputError(f"config.json: {name} must be positive", "E_CONFIG_INVALID",
                                    details={"field": name})

    def used(self) -> list[str]:
        """Names of the fields that differ from Llama (what ``slmpack inspect`` lists)."""
        base = Deltas()
        out = []
        for name in self.__dataclass_fields__:
            v = getattr(self, name)
            if v != getattr(base, name):
                shown = v.value if isinstance(v, enum.Enum) else v.describe() if isinstance(v, MoESpec) else \
                    "on" if name == "longrope" else v
                out.append(f"{name}={shown}")
        return out


def activation_from(name: str | None, field: str) -> Activation:
    table = {"silu": Activation.SILU, "swish": Activation.SILU, "gelu_pytorch_tanh": Activation.GELU_TANH,
             "gelu_new": Activation.GELU_TANH, "gelu": Activation.GELU}
    if name not in table:
        raise UnsupportedError(f"config.json {field}={name!r} is not supported "
                               f"(supported: {', '.join(sorted(table))})", "E_UNSUPPORTED", details={"field": field})
    return table[name]


def refuse_if(cond: bool, field: str, why: str) -> None:
    """A config value we do not implement: a typed refusal naming the field."""
    if cond:
        raise UnsupportedError(f"config.json {field}: {why}", "E_UNSUPPORTED", details={"field": field})
