"""EncoderSpec: the facts of an encoder checkpoint, from config.json and the sentence-transformers
layout (modules.json, 1_Pooling/config.json, optional 2_Normalize) only.

Never imports or executes anything named in the config (``auto_map`` is ignored on purpose).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

from slmpack.errors import BadInputError, UnsupportedError


class EncoderFamily(str, enum.Enum):
    BERT = "bert"
    DISTILBERT = "distilbert"
    ROBERTA = "roberta"        # also XLM-RoBERTa (same graph, position ids offset by padding_idx + 1)


class EncoderHead(str, enum.Enum):
    NONE = "none"                          # BertModel / DistilBertModel / RobertaModel
    SEQUENCE_CLASSIFICATION = "sequence_classification"


class Pooling(str, enum.Enum):
    MEAN = "mean"
    CLS = "cls"
    MAX = "max"


class EncoderOutput(str, enum.Enum):
    SENTENCE_EMBEDDING = "sentence_embedding"   # [B, D], pooling (+ L2 norm) in the graph
    LAST_HIDDEN_STATE = "last_hidden_state"     # [B, S, D]
    LOGITS = "logits"                           # [B, num_labels]


_ARCHITECTURES = {
    "BertModel": (EncoderFamily.BERT, EncoderHead.NONE),
    "BertForSequenceClassification": (EncoderFamily.BERT, EncoderHead.SEQUENCE_CLASSIFICATION),
    "DistilBertModel": (EncoderFamily.DISTILBERT, EncoderHead.NONE),
    "DistilBertForSequenceClassification": (EncoderFamily.DISTILBERT, EncoderHead.SEQUENCE_CLASSIFICATION),
    "RobertaModel": (EncoderFamily.ROBERTA, EncoderHead.NONE),
    "RobertaForSequenceClassification": (EncoderFamily.ROBERTA, EncoderHead.SEQUENCE_CLASSIFICATION),
    "XLMRobertaModel": (EncoderFamily.ROBERTA, EncoderHead.NONE),
    "XLMRobertaForSequenceClassification": (EncoderFamily.ROBERTA, EncoderHead.SEQUENCE_CLASSIFICATION),
}
_MODEL_TYPES = {"bert": EncoderFamily.BERT, "distilbert": EncoderFamily.DISTILBERT,
                "roberta": EncoderFamily.ROBERTA, "xlm-roberta": EncoderFamily.ROBERTA}
SUPPORTED_ENCODERS = tuple(sorted(_ARCHITECTURES))
_ST_POOLING = {"pooling_mode_mean_tokens": Pooling.MEAN, "pooling_mode_cls_token": Pooling.CLS,
               "pooling_mode_max_tokens": Pooling.MAX}
_ST_KNOWN = {"sentence_transformers.models.Transformer", "sentence_transformers.models.Pooling",
             "sentence_transformers.models.Normalize"}


@dataclass(frozen=True)
class SentenceLayout:
    """What a sentence-transformers directory says about the pooled embedding."""

    pooling: Pooling
    normalize: bool
    max_seq_length: int | None


@dataclass(frozen=True)
class EncoderSpec:
    family: EncoderFamily
    head: EncoderHead
    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    max_position_embeddings: int
    layer_norm_eps: float
    type_vocab_size: int          # 0: no token_type_ids input (DistilBERT)
    pad_token_id: int
    id2label: tuple[str, ...] = ()
    sentence: SentenceLayout | None = None
    weight_prefix: str = ""       # "bert." / "distilbert." / "roberta." for *ForSequenceClassification

    def __post_init__(self):
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
                     "max_position_embeddings"):
            if int(getattr(self, name)) <= 0:
                raise BadInputError(f"config.json: {name} must be positive", "E_CONFIG_INVALID")
        if self.hidden_size % self.num_heads:
            raise BadInputError(f"config.json: hidden size {self.hidden_size} is not a multiple of "
                                f"{self.num_heads} heads", "E_CONFIG_INVALID")
        if self.head is EncoderHead.SEQUENCE_CLASSIFICATION and not self.id2label:
            raise BadInputError("config.json: a classification head needs id2label / num_labels", "E_CONFIG_INVALID")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def output(self) -> EncoderOutput:
        if self.head is EncoderHead.SEQUENCE_CLASSIFICATION:
            return EncoderOutput.LOGITS
        return EncoderOutput.SENTENCE_EMBEDDING if self.sentence else EncoderOutput.LAST_HIDDEN_STATE

    @property
    def uses_token_type_ids(self) -> bool:
        return self.type_vocab_size > 0 and self.family is not EncoderFamily.DISTILBERT

    @property
    def max_sequence(self) -> int:
        """Longest input the program accepts (RoBERTa reserves padding_idx + 1 positions)."""
        n = self.max_position_embeddings - (self.pad_token_id + 1 if self.family is EncoderFamily.ROBERTA else 0)
        if self.sentence and self.sentence.max_seq_length:
            n = min(n, self.sentence.max_seq_length)
        return n

    @property
    def num_parameters(self) -> int:
        h, i, n = self.hidden_size, self.intermediate_size, self.num_layers
        emb = (self.vocab_size + self.max_position_embeddings + max(self.type_vocab_size, 0)) * h + 2 * h
        layer = 4 * (h * h + h) + (h * i + i) + (i * h + h) + 4 * h
        head = 0
        if self.head is EncoderHead.SEQUENCE_CLASSIFICATION:
            head = (h * h + h) + (h * len(self.id2label) + len(self.id2label))
        return emb + n * layer + head

    def to_json(self) -> dict:
        return {
            "kind": "encoder", "family": self.family.value, "head": self.head.value,
            "architecture": self.architecture, "vocab_size": self.vocab_size, "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size, "num_layers": self.num_layers,
            "num_heads": self.num_heads, "max_position_embeddings": self.max_position_embeddings,
            "max_sequence": self.max_sequence, "layer_norm_eps": self.layer_norm_eps,
            "type_vocab_size": self.type_vocab_size, "pad_token_id": self.pad_token_id,
            "output": self.output.value, "id2label": list(self.id2label),
            "pooling": self.sentence.pooling.value if self.sentence else None,
            "normalize": bool(self.sentence and self.sentence.normalize),
            "num_parameters": self.num_parameters,
        }


def _read_json(path: Path):
    """Through the confined reader: a regular file (no symlink, FIFO or device), bounded depth."""
    from slmpack import confine

    return confine.read_json(confine.ModelRoot(path.parent), path.name)


def _inside(model_dir: Path, rel: str) -> Path:
    """A path named by modules.json, refused if it leaves the model directory (.. or symlinks)."""
    root = model_dir.resolve()
    p = (model_dir / rel).resolve()
    if p != root and root not in p.parents:
        raise BadInputError(f"modules.json names {rel!r}, outside the model directory", "E_PATH_ESCAPE")
    return p


def sentence_layout(model_dir: Path) -> SentenceLayout | None:
    """Pooling and normalization from a sentence-transformers directory, or None if not one."""
    modules_path = Path(model_dir) / "modules.json"
    if not modules_path.is_file():
        return None
    modules = _read_json(modules_path)
    if not isinstance(modules, list):
        raise BadInputError(f"{modules_path}: expected a list of modules", "E_CONFIG_INVALID")
    types = [m.get("type", "") for m in modules]
    unknown = [t for t in types if t not in _ST_KNOWN]
    if unknown:
        raise UnsupportedError(f"sentence-transformers module(s) {', '.join(unknown)} are not supported "
                               f"(supported: Transformer, Pooling, Normalize)", "E_ARCH_UNSUPPORTED")
    pool_mod = next((m for m in modules if m.get("type") == "sentence_transformers.models.Pooling"), None)
    if pool_mod is None:
        raise UnsupportedError("sentence-transformers directory without a Pooling module", "E_ARCH_UNSUPPORTED")
    pcfg = _read_json(_inside(Path(model_dir), pool_mod.get("path", "")) / "config.json")
    modes = [p for key, p in _ST_POOLING.items() if pcfg.get(key)]
    others = sorted(k for k, v in pcfg.items() if k.startswith("pooling_mode_") and v and k not in _ST_POOLING)
    if others or len(modes) != 1:
        raise UnsupportedError(f"pooling {others or [m.value for m in modes]}: exactly one of mean / cls / max "
                               "is supported", "E_POOLING_UNSUPPORTED")
    max_len = None
    st_cfg = Path(model_dir) / "sentence_bert_config.json"
    if st_cfg.is_file():
        max_len = _read_json(st_cfg).get("max_seq_length")
    normalize = "sentence_transformers.models.Normalize" in types
    return SentenceLayout(pooling=modes[0], normalize=normalize, max_seq_length=int(max_len) if max_len else None)


def is_encoder_config(cfg: dict) -> bool:
    archs = cfg.get("architectures") or []
    if archs:
        return any(a in _ARCHITECTURES for a in archs)
    return cfg.get("model_type") in _MODEL_TYPES


def is_encoder_dir(model_dir: Path) -> bool:
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        return False
    cfg = _read_json(path)
    return isinstance(cfg, dict) and is_encoder_config(cfg)


def spec_from_config(cfg: dict, sentence: SentenceLayout | None = None) -> EncoderSpec:
    archs = cfg.get("architectures") or []
    arch = next((a for a in archs if a in _ARCHITECTURES), None)
    if arch is not None:
        family, head = _ARCHITECTURES[arch]
    elif not archs and cfg.get("model_type") in _MODEL_TYPES:
        family, head, arch = _MODEL_TYPES[cfg["model_type"]], EncoderHead.NONE, cfg["model_type"]
    else:
        raise UnsupportedError(f"unknown encoder architecture {', '.join(archs) or cfg.get('model_type')}; "
                               f"supported: {', '.join(SUPPORTED_ENCODERS)}", "E_ARCH_UNSUPPORTED")
    if head is EncoderHead.SEQUENCE_CLASSIFICATION and sentence is not None:
        raise UnsupportedError("a sentence-transformers directory with a classification head", "E_ARCH_UNSUPPORTED")
    distil = family is EncoderFamily.DISTILBERT
    act = cfg.get("activation" if distil else "hidden_act", "gelu")
    if act != "gelu":
        raise UnsupportedError(f"activation {act!r} is not supported (gelu only)", "E_UNSUPPORTED")
    if not distil and cfg.get("position_embedding_type", "absolute") != "absolute":
        raise UnsupportedError(f"position_embedding_type {cfg['position_embedding_type']!r} (absolute only)",
                               "E_UNSUPPORTED")
    if head is EncoderHead.SEQUENCE_CLASSIFICATION and cfg.get("problem_type") not in (
            None, "single_label_classification"):
        raise UnsupportedError(f"problem_type {cfg['problem_type']!r} (single-label classification only)",
                               "E_UNSUPPORTED")
    try:
        labels = ()
        if head is EncoderHead.SEQUENCE_CLASSIFICATION:
            id2label = {int(k): str(v) for k, v in (cfg.get("id2label") or {}).items()}
            n = int(cfg.get("num_labels") or len(id2label) or 2)
            labels = tuple(id2label.get(i, f"LABEL_{i}") for i in range(n))
        return EncoderSpec(
            family=family, head=head, architecture=arch,
            vocab_size=int(cfg["vocab_size"]),
            hidden_size=int(cfg["dim" if distil else "hidden_size"]),
            intermediate_size=int(cfg["hidden_dim" if distil else "intermediate_size"]),
            num_layers=int(cfg["n_layers" if distil else "num_hidden_layers"]),
            num_heads=int(cfg["n_heads" if distil else "num_attention_heads"]),
            max_position_embeddings=int(cfg.get("max_position_embeddings", 512)),
            layer_norm_eps=1e-12 if distil else float(cfg.get("layer_norm_eps", 1e-12)),
            type_vocab_size=0 if distil else int(cfg.get("type_vocab_size", 2)),
            pad_token_id=int(cfg.get("pad_token_id") if cfg.get("pad_token_id") is not None else 0),
            id2label=labels, sentence=sentence,
            weight_prefix={EncoderFamily.BERT: "bert.", EncoderFamily.DISTILBERT: "distilbert.",
                           EncoderFamily.ROBERTA: "roberta."}[family]
            if head is EncoderHead.SEQUENCE_CLASSIFICATION else "",
        )
    except KeyError as e:
        raise BadInputError(f"config.json is missing required field {e.args[0]!r}", "E_CONFIG_INVALID") from None
    except (TypeError, ValueError) as e:
        raise BadInputError(f"config.json has an invalid value: {e}", "E_CONFIG_INVALID") from None


def load_encoder_spec(model_dir: Path) -> EncoderSpec:
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise BadInputError(f"{model_dir}: no config.json (not a Hugging Face model directory)", "E_MODEL_DIR_INVALID")
    cfg = _read_json(path)
    if not isinstance(cfg, dict):
        raise BadInputError(f"{path}: expected a JSON object", "E_CONFIG_INVALID")
    return spec_from_config(cfg, sentence_layout(Path(model_dir)))
