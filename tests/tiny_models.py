"""The one tiny-model factory of the tests (no hub, no network): random Hugging Face checkpoints
written to disk (``write_tiny_model``: Llama / Mistral / Qwen2, MHA / GQA / MQA, tied or untied,
Qwen2's biased q/k/v, optionally the demo tokenizer and varied-logit weights) and an in-memory
ModelSpec + reference module (``tiny_spec`` / ``tiny_reference``)."""
from __future__ import annotations

import shutil
from pathlib import Path

import torch

from slmpack.exporter.reference import ReferenceModel
from slmpack.exporter.spec import Family, ModelSpec, RopeSpec

FAMILIES = ("llama", "mistral", "qwen2")



def hf_config(family: str, *, gqa: bool = True, tied: bool = True, rope: dict | None = None,
              vocab: int = 96, hidden: int = 32, layers: int = 2, heads: int = 4, max_pos: int = 128,
              kv_heads: int | None = None, inter: int | None = None):
    import transformers as tf

    cls = {"llama": tf.LlamaConfig, "mistral": tf.MistralConfig, "qwen2": tf.Qwen2Config}[family]
    kv = kv_heads if kv_heads is not None else (heads // 2 if gqa else heads)   # 1: MQA, heads: MHA
    kw = dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter or hidden * 2 + 8,
              num_hidden_layers=layers, num_attention_heads=heads,
              num_key_value_heads=kv, max_position_embeddings=max_pos,
              tie_word_embeddings=tied, bos_token_id=1, eos_token_id=2, rms_norm_eps=1e-5)
    if rope:
        kw["rope_parameters"] = {"rope_theta": 10000.0, **rope}
    if family == "mistral":
        kw["sliding_window"] = None
    return cls(**kw)


def redraw(model, **by_part) -> None:
    """Norm weights become 1 + 0.1 N(0, 1); a parameter whose name contains a keyword of
    ``by_part`` (``bias``, ``embed``; ``rest`` for any other) becomes ``fn(p)``. In place."""
    rest = by_part.pop("rest", None)
    with torch.no_grad():
        for name, p in model.named_parameters():
            fn = (lambda q: 1.0 + 0.1 * torch.randn_like(q)) if "norm" in name else \
                next((f for part, f in by_part.items() if part in name), rest)
            if fn is not None:
                p.copy_(fn(p))


def write_tiny_model(path: Path, family: str = "llama", seed: int = 0, *, varied: bool = False,
                     demo_tokenizer: bool = False, **kw) -> Path:
    """``varied``: re-draw every matrix at 5/sqrt(fan_in) (HF's 0.02 init makes greedy decoding
    repeat one token; this gives distinct continuations). ``demo_tokenizer``: copy the bundled
    demo model's tokenizer files (pass ``vocab=4096``)."""
    import transformers as tf

    cfg = hf_config(family, **kw)
    cls = {"llama": tf.LlamaForCausalLM, "mistral": tf.MistralForCausalLM, "qwen2": tf.Qwen2ForCausalLM}[family]
    torch.manual_seed(seed)
    model = cls(cfg).eval()
    redraw(model, bias=lambda p: 0.1 * torch.randn_like(p))  # non-trivial norms and biases: parity can fail
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    if varied:
        from safetensors.torch import load_file, save_file

        sd, g = load_file(path / "model.safetensors"), torch.Generator().manual_seed(0)
        sd = {k: torch.randn(v.shape, generator=g) * 5 / v.shape[-1] ** 0.5 if v.dim() == 2 else v
              for k, v in sd.items()}
        save_file(sd, str(path / "model.safetensors"), metadata={"format": "pt"})
    if demo_tokenizer:
        from slmpack.bundled import demo_model_dir

        for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
            shutil.copyfile(demo_model_dir() / name, path / name)
    return path


# ---- in-memory: a ModelSpec and our reference module, no checkpoint on disk ----------------------
LAYERS = 2


def tiny_spec(layers: int = LAYERS, heads: int = 4, kv_heads: int = 2, bias: bool = False) -> ModelSpec:
    return ModelSpec(family=Family.LLAMA, vocab_size=64, hidden_size=32, intermediate_size=48,
                     num_layers=layers, num_heads=heads, num_kv_heads=kv_heads, head_dim=8,
                     rms_norm_eps=1e-5, rope=RopeSpec(theta=10000.0), max_position_embeddings=64,
                     tie_word_embeddings=True, attention_bias=bias)


def tiny_reference(spec: ModelSpec | None = None, max_context: int = 32, seed: int = 0) -> ReferenceModel:
    spec = spec or tiny_spec()
    torch.manual_seed(seed)
    ref = ReferenceModel(spec, max_context).eval()
    with torch.no_grad():
        for name, p in ref.named_parameters():  # non-trivial norms/biases so equality can fail
            if "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
            else:
                p.copy_(0.2 * torch.randn_like(p))
            p.requires_grad_(False)
    return ref


def one_torch_thread():
    """Fixture body: tiny tensors run faster on one thread and are immune to other jobs on 2 cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
