"""Our own encoder module: BERT / DistilBERT / RoBERTa (post-LayerNorm, GELU), with
sentence-transformers pooling (mean / CLS / max) and L2 normalization, or a classification head,
inside the graph. Built from an EncoderSpec and a safetensors state dict; no transformers code.

``forward(input_ids, attention_mask[, token_type_ids])`` returns the spec's one output:
sentence_embedding [B, D], last_hidden_state [B, S, D] or logits [B, num_labels].
"""
from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from slmpack.errors import BadInputError
from slmpack.exporter.encoder.spec import EncoderFamily, EncoderHead, EncoderOutput, EncoderSpec, Pooling

# HF parameter name (prefix stripped) -> our name. {i} is the layer index.
_BERT_NAMES = {
    "embeddings.word_embeddings": "word", "embeddings.position_embeddings": "pos",
    "embeddings.token_type_embeddings": "tok_type", "embeddings.LayerNorm": "emb_ln",
    "encoder.layer.{i}.attention.self.query": "layers.{i}.q", "encoder.layer.{i}.attention.self.key": "layers.{i}.k",
    "encoder.layer.{i}.attention.self.value": "layers.{i}.v",
    "encoder.layer.{i}.attention.output.dense": "layers.{i}.o",
    "encoder.layer.{i}.attention.output.LayerNorm": "layers.{i}.ln1",
    "encoder.layer.{i}.intermediate.dense": "layers.{i}.fc1", "encoder.layer.{i}.output.dense": "layers.{i}.fc2",
    "encoder.layer.{i}.output.LayerNorm": "layers.{i}.ln2",
}
_DISTIL_NAMES = {
    "embeddings.word_embeddings": "word", "embeddings.position_embeddings": "pos", "embeddings.LayerNorm": "emb_ln",
    "transformer.layer.{i}.attention.q_lin": "layers.{i}.q", "transformer.layer.{i}.attention.k_lin": "layers.{i}.k",
    "transformer.layer.{i}.attention.v_lin": "layers.{i}.v", "transformer.layer.{i}.attention.out_lin": "layers.{i}.o",
    "transformer.layer.{i}.sa_layer_norm": "layers.{i}.ln1", "transformer.layer.{i}.ffn.lin1": "layers.{i}.fc1",
    "transformer.layer.{i}.ffn.lin2": "layers.{i}.fc2", "transformer.layer.{i}.output_layer_norm": "layers.{i}.ln2",
}
_EMBEDDINGS = ("word", "pos", "tok_type")
# classification heads, named from the checkpoint root: dense (+ tanh / relu) on [CLS] -> out
_HEAD_NAMES = {
    EncoderFamily.BERT: ({"bert.pooler.dense": "head_dense", "classifier": "head_out"}, torch.tanh),
    EncoderFamily.DISTILBERT: ({"pre_classifier": "head_dense", "classifier": "head_out"}, torch.relu),
    EncoderFamily.ROBERTA: ({"classifier.dense": "head_dense", "classifier.out_proj": "head_out"}, torch.tanh),
}
# checkpoint entries we read nothing from (a pooler or MLM head of a plain encoder, position buffers)
_IGNORED = re.compile(r"^((bert\.|roberta\.)?pooler\.|cls\.|lm_head\.|.*position_ids$|.*\.token_type_ids$)")


class EncoderLayer(nn.Module):
    def __init__(self, spec: EncoderSpec):
        super().__init__()
        h, eps = spec.hidden_size, spec.layer_norm_eps
        self.heads, self.head_dim = spec.num_heads, spec.head_dim
        self.q, self.k, self.v, self.o = (nn.Linear(h, h) for _ in range(4))
        self.ln1, self.ln2 = nn.LayerNorm(h, eps=eps), nn.LayerNorm(h, eps=eps)
        self.fc1, self.fc2 = nn.Linear(h, spec.intermediate_size), nn.Linear(spec.intermediate_size, h)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape

        def split(t):
            return t.view(b, s, self.heads, self.head_dim).transpose(1, 2)

        a = F.scaled_dot_product_attention(split(self.q(x)), split(self.k(x)), split(self.v(x)), attn_mask=bias)
        x = self.ln1(x + self.o(a.transpose(1, 2).reshape(b, s, -1)))
        return self.ln2(x + self.fc2(F.gelu(self.fc1(x))))


class EncoderReference(nn.Module):
    def __init__(self, spec: EncoderSpec):
        super().__init__()
        self.spec = spec
        h = spec.hidden_size
        self.word = nn.Embedding(spec.vocab_size, h)
        self.pos = nn.Embedding(spec.max_position_embeddings, h)
        self.tok_type = nn.Embedding(spec.type_vocab_size, h) if spec.type_vocab_size else None
        self.emb_ln = nn.LayerNorm(h, eps=spec.layer_norm_eps)
        self.layers = nn.ModuleList(EncoderLayer(spec) for _ in range(spec.num_layers))
        if spec.head is EncoderHead.SEQUENCE_CLASSIFICATION:
            self.head_dense = nn.Linear(h, h)
            self.head_out = nn.Linear(h, len(spec.id2label))
            self._head_act = _HEAD_NAMES[spec.family][1]

    def _positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.spec.family is EncoderFamily.ROBERTA:  # as transformers: count non-pad tokens, offset by pad
            keep = input_ids.ne(self.spec.pad_token_id).to(torch.long)
            return torch.cumsum(keep, dim=1) * keep + self.spec.pad_token_id
        return torch.arange(input_ids.shape[1], dtype=torch.long, device=input_ids.device)[None]

    def hidden_states(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        x = self.word(input_ids) + self.pos(self._positions(input_ids))
        if self.tok_type is not None:
            x = x + self.tok_type(token_type_ids if token_type_ids is not None else torch.zeros_like(input_ids))
        x = self.emb_ln(x)
        keep = attention_mask.to(x.dtype)[:, None, None, :]
        bias = (1.0 - keep) * torch.finfo(x.dtype).min
        for layer in self.layers:
            x = layer(x, bias)
        return x

    def forward(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        h = self.hidden_states(input_ids, attention_mask, token_type_ids)
        out = self.spec.output
        if out is EncoderOutput.LAST_HIDDEN_STATE:
            return h
        if out is EncoderOutput.LOGITS:
            # on [B, 1, D] (not [B, D]): ONNX gets MatMul + Add, not Gemm, like every other linear, so a
            # QuantPlan's weights are found and encoded the same way (same math, row by row)
            return self.head_out(self._head_act(self.head_dense(h[:, :1])))[:, 0]
        return pool(h, attention_mask, self.spec.sentence.pooling, self.spec.sentence.normalize)


def pool(h: torch.Tensor, attention_mask: torch.Tensor, pooling: Pooling, normalize: bool) -> torch.Tensor:
    """sentence-transformers' Pooling (+ Normalize), over the valid tokens of each row."""
    m = attention_mask.to(h.dtype)[:, :, None]
    if pooling is Pooling.CLS:
        e = h[:, 0]
    elif pooling is Pooling.MEAN:
        e = (h * m).sum(1) / torch.clamp(m.sum(1), min=1e-9)
    else:
        e = torch.where(m > 0, h, torch.full_like(h, -1e9)).max(dim=1).values
    return F.normalize(e, p=2.0, dim=1) if normalize else e


def _name_map(spec: EncoderSpec) -> dict[str, str]:
    table = _DISTIL_NAMES if spec.family is EncoderFamily.DISTILBERT else _BERT_NAMES
    out = {}
    for hf, ours in table.items():
        for i in range(spec.num_layers if "{i}" in hf else 1):
            for p in ("weight",) if ours in _EMBEDDINGS else ("weight", "bias"):
                out[f"{spec.weight_prefix}{hf.format(i=i)}.{p}"] = f"{ours.format(i=i)}.{p}"
    if spec.head is EncoderHead.SEQUENCE_CLASSIFICATION:
        for hf, ours in _HEAD_NAMES[spec.family][0].items():
            for p in ("weight", "bias"):
                out[f"{hf}.{p}"] = f"{ours}.{p}"
    return out


def build_encoder(spec: EncoderSpec, state: dict[str, torch.Tensor]) -> EncoderReference:
    """Our module with the checkpoint's weights; missing, extra or misshapen tensors are typed errors."""
    model = EncoderReference(spec)
    names = _name_map(spec)
    if spec.head is EncoderHead.NONE and not any(k in state for k in names):  # e.g. a "bert."-prefixed BertModel
        prefix = {EncoderFamily.BERT: "bert.", EncoderFamily.DISTILBERT: "distilbert.",
                  EncoderFamily.ROBERTA: "roberta."}[spec.family]
        state = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}
    own = model.state_dict()
    if spec.type_vocab_size == 0:
        names = {k: v for k, v in names.items() if not v.startswith("tok_type.")}
    missing = sorted(k for k in names if k not in state)
    extra = sorted(k for k in state if k not in names and not _IGNORED.match(k))
    if missing or extra:
        raise BadInputError(f"checkpoint does not match {spec.architecture}: missing {missing[:3]}, "
                            f"unexpected {extra[:3]}", "E_WEIGHTS_MISMATCH",
                            details={"missing": missing, "unexpected": extra})
    loaded = {}
    for hf, ours in names.items():
        t = state[hf]
        if tuple(t.shape) != tuple(own[ours].shape):
            raise BadInputError(f"{hf}: shape {tuple(t.shape)}, config says {tuple(own[ours].shape)}",
                                "E_WEIGHTS_MISMATCH")
        loaded[ours] = t.to(torch.float32)
    model.load_state_dict(loaded, strict=True)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()
