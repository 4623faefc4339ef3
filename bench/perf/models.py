"""Benchmark checkpoints, created locally (no hub): the bundled demo model and a SmolLM-135M-shaped
Llama with random weights (hidden 576, 30 layers, 9 heads, 3 kv heads, intermediate 1536, vocab
49152, tied), plus depth variants of it for the export-scaling measurement."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

SMOLLM = dict(hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
              intermediate_size=1536, vocab_size=49152, tie_word_embeddings=True, max_position_embeddings=2048,
              rms_norm_eps=1e-5, bos_token_id=0, eos_token_id=0)


def demo_dir() -> Path:
    from slmpack.bundled import demo_model_dir

    return Path(demo_model_dir())


def smollm_shaped(workdir: Path, layers: int = 30, seed: int = 0) -> Path:
    """Write (once) a random-weight SmolLM-135M-shaped checkpoint with ``layers`` layers."""
    out = Path(workdir) / "models" / f"smollm135m-shaped-L{layers}"
    if (out / "model.safetensors").is_file():
        return out
    import torch
    import transformers as tf

    torch.manual_seed(seed)
    model = tf.LlamaForCausalLM(tf.LlamaConfig(**{**SMOLLM, "num_hidden_layers": layers})).eval()
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    cfg = json.loads((tmp / "config.json").read_text())
    cfg.setdefault("rope_theta", 10000.0)  # for peers pinned to transformers 4.x, which read this key
    (tmp / "config.json").write_text(json.dumps(cfg, indent=2))
    for name in ("tokenizer.json", "tokenizer_config.json"):  # ids < 4096 are valid in the 49152 vocab
        shutil.copyfile(demo_dir() / name, tmp / name)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def num_params(model_dir: Path) -> int:
    from slmpack.exporter.spec import load_spec

    return load_spec(Path(model_dir)).num_parameters


def spec_facts(model_dir: Path) -> dict:
    from slmpack.exporter.spec import load_spec

    s = load_spec(Path(model_dir))
    return {"layers": s.num_layers, "hidden": s.hidden_size, "heads": s.num_heads, "kv_heads": s.num_kv_heads,
            "head_dim": s.head_dim, "intermediate": s.intermediate_size, "vocab": s.vocab_size,
            "tied": s.tie_word_embeddings, "params": s.num_parameters}
