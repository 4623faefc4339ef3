"""A tiny *instruct* checkpoint for chat tests: random weights, the demo model's byte-level BPE
tokenizer plus two chat special tokens, a ChatML template saved the transformers-5 way
(``chat_template.jinja``) and two stop tokens in ``generation_config.json``."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SPECIALS = ("<|im_start|>", "<|im_end|>")
QUESTION = [{"role": "system", "content": "You answer briefly."},
            {"role": "user", "content": "What is the capital of France?"}]


def write_tiny_instruct(path: Path, *, max_pos: int = 256, seed: int = 0, stop_within: int = 12,
                        template_in: str = "jinja") -> Path:
    """Write the checkpoint; its lm_head row for ``<|im_end|>`` is set so that greedy generation
    from QUESTION ends on that stop token within ``stop_within`` tokens (so stop lists matter).
    ``template_in``: "jinja" (chat_template.jinja), "tokenizer_config" or "chat_template_json"."""
    import transformers as tf

    from slmpack.bundled import demo_model_dir

    path.mkdir(parents=True, exist_ok=True)
    tok = tf.PreTrainedTokenizerFast(tokenizer_file=str(demo_model_dir() / "tokenizer.json"),
                                     bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                     pad_token="<|endoftext|>", unk_token="<|endoftext|>")
    tok.add_special_tokens({"additional_special_tokens": list(SPECIALS)})
    tok.chat_template = CHATML
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    cfg = tf.LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=72, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_pos,
                         tie_word_embeddings=False, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    torch.manual_seed(seed)
    model = tf.LlamaForCausalLM(cfg).eval()
    model.generation_config = tf.GenerationConfig(bos_token_id=0, eos_token_id=[0, im_end], pad_token_id=0,
                                                  do_sample=False)
    ids = tok.apply_chat_template(QUESTION, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    ids = ids["input_ids"]
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
        seq = model.generate(ids, max_new_tokens=3, do_sample=False, eos_token_id=None)
        hs = model(seq, output_hidden_states=True).hidden_states[-1][0, ids.shape[1] - 1:]  # steps 1..4
        q, _ = torch.linalg.qr(hs[:-1].T)   # the row sees nothing of steps 1..3: im_end wins at step 4
        perp = hs[-1] - q @ (q.T @ hs[-1])
        model.lm_head.weight[im_end] = perp / perp.norm() ** 2 * (model.lm_head.weight @ hs[-1]).max().abs() * 2
        gen = model.generate(ids, max_new_tokens=stop_within, do_sample=False)[0, ids.shape[1]:].tolist()
    if im_end not in gen or gen.index(im_end) < 2:
        raise AssertionError(f"tiny instruct model does not stop within {stop_within}: {gen}")
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    _move_template(path, template_in)
    return path


def _move_template(path: Path, where: str) -> None:
    jinja = path / "chat_template.jinja"
    if where == "jinja":
        return
    text = jinja.read_text(encoding="utf-8")
    jinja.unlink()
    if where == "tokenizer_config":
        cfg = json.loads((path / "tokenizer_config.json").read_text(encoding="utf-8"))
        cfg["chat_template"] = text
        (path / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    elif where == "chat_template_json":
        (path / "chat_template.json").write_text(json.dumps({"chat_template": text}), encoding="utf-8")
    else:
        raise ValueError(where)


def reference_chat_tokens(model_dir: Path, max_new_tokens: int = 16) -> tuple[list[int], list[int]]:
    """transformers' own chat path: (apply_chat_template ids, generate ids)."""
    import transformers as tf

    tok = tf.AutoTokenizer.from_pretrained(model_dir)
    model = tf.AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids = tok.apply_chat_template(QUESTION, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    ids = ids["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False)
    return ids[0].tolist(), out[0, ids.shape[1]:].tolist()
