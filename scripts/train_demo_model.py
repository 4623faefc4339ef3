"""Build the bundled demo model: a ~4M-parameter Llama trained on stdlib docstrings.

Writes slmpack/demo_data/{heldout,calibration}.txt and slmpack/demo_model/ (HF model,
tokenizer, training log); deterministic for a given Python/torch version and CPU.
Usage: .venv/bin/python scripts/train_demo_model.py [--steps N] [--measure K]
(--measure K times K training steps and exits without writing anything).
"""
import argparse
import ast
import hashlib
import json
import math
import os
import platform
import random
import re
import sysconfig
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / "slmpack" / "demo_data"
MODEL_DIR = ROOT / "slmpack" / "demo_model"

SEED = 0
SKIP_DIRS = {"site-packages", "test", "tests", "idlelib", "lib2to3", "__pycache__"}
MIN_DOC_CHARS = 40
HELDOUT_PERCENT = 5            # % of modules (by sha256 of the relative path) held out
HELDOUT_CAP = 150_000          # bytes
CALIB_TARGET = 100_000         # bytes
EOS = "<|endoftext|>"
VOCAB_SIZE = 4096
SEQ_LEN = 128
BATCH = 32
HP = dict(lr=3e-3, min_lr_frac=0.1, warmup_frac=0.05, weight_decay=0.1, grad_clip=1.0,
          betas=(0.9, 0.95), seq_len=SEQ_LEN, batch_size=BATCH, seed=SEED)
STEPS = 560                    # fixed (not time-based) so the result is deterministic
PROMPTS = ["Return the", "This module provides", "The default value is"]


# ----------------------------------------------------------------------------- corpus
def normalize(doc: str) -> str:
    """Light cleanup: tabs -> spaces, strip line ends, at most one blank line in a row."""
    lines = [ln.rstrip() for ln in doc.expandtabs(4).splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def module_docstrings(path: Path) -> list[str]:
    """Module/class/function docstrings of one file, in source order (parsed, never run)."""
    tree = ast.parse(path.read_bytes(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc:
                found.append((getattr(node, "lineno", 0), normalize(doc)))
    return [d for _, d in sorted(found) if len(d) >= MIN_DOC_CHARS]


def build_corpus() -> tuple[list[str], list[str]]:
    """Walk the stdlib in sorted order; split whole modules into train / held-out."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    train, heldout = [], []
    for dirpath, dirnames, filenames in os.walk(stdlib):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for name in sorted(f for f in filenames if f.endswith(".py")):
            path = Path(dirpath) / name
            rel = path.relative_to(stdlib).as_posix()
            try:
                docs = module_docstrings(path)
            except (SyntaxError, ValueError, UnicodeDecodeError):
                continue  # a few stdlib files are templates / other encodings
            bucket = int(hashlib.sha256(rel.encode()).hexdigest(), 16) % 100
            (heldout if bucket < HELDOUT_PERCENT else train).extend(docs)
    # Exact-duplicate removal (first occurrence wins); held-out never repeats a train doc.
    train = list(dict.fromkeys(train))
    seen = set(train)
    heldout = [d for d in dict.fromkeys(heldout) if d not in seen]
    return train, heldout


def take_until(docs: list[str], cap: int) -> list[str]:
    """Longest prefix of docs whose blank-line-joined UTF-8 size stays within cap."""
    out, size = [], 0
    for d in docs:
        size += len(d.encode()) + 2
        if size > cap:
            break
        out.append(d)
    return out


# -------------------------------------------------------------------------- tokenizer
def train_tokenizer(train_docs: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(train_docs, trainer=trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE, special_tokens=[EOS], min_frequency=2, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    assert tok.token_to_id(EOS) == 0 and tok.get_vocab_size() == VOCAB_SIZE
    return tok


def save_tokenizer(tok, out: Path) -> None:
    tok.save(str(out / "tokenizer.json"))
    cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": EOS, "eos_token": EOS,
           "pad_token": EOS, "unk_token": EOS, "add_bos_token": False, "add_eos_token": False,
           "add_prefix_space": False, "clean_up_tokenization_spaces": False,
           "model_max_length": 512}
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def to_stream(tok, docs: list[str]) -> torch.Tensor:
    """EOS doc EOS doc ... EOS -- the document separator doubles as BOS."""
    ids = [0]
    for enc in tok.encode_batch(docs):
        ids += enc.ids + [0]
    return torch.tensor(ids, dtype=torch.long)


# ------------------------------------------------------------------------------ model
def make_model():
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(vocab_size=VOCAB_SIZE, hidden_size=256, num_hidden_layers=4,
                      num_attention_heads=8, num_key_value_heads=2, intermediate_size=704,
                      hidden_act="silu", rms_norm_eps=1e-5, rope_theta=10000.0,
                      max_position_embeddings=512, tie_word_embeddings=True,
                      bos_token_id=0, eos_token_id=0, pad_token_id=0, dtype="float32")
    torch.manual_seed(SEED)
    return LlamaForCausalLM(cfg)


@torch.no_grad()
def heldout_ppl(model, stream: torch.Tensor) -> float:
    """exp(mean NLL) over non-overlapping SEQ_LEN windows (the last partial one included)."""
    model.eval()
    n = len(stream) // SEQ_LEN
    chunks = list(stream[:n * SEQ_LEN].view(n, SEQ_LEN).split(32))  # full windows, batched
    if len(stream) - n * SEQ_LEN >= 2:
        chunks.append(stream[n * SEQ_LEN:][None])                     # last partial window
    total, count = 0.0, 0
    for x in chunks:
        logits = model(x).logits[:, :-1]
        total += torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)), x[:, 1:].reshape(-1), reduction="sum").item()
        count += x[:, 1:].numel()
    model.train()
    return math.exp(total / count)


def batches(stream: torch.Tensor):
    """Endless deterministic batches: each epoch picks a random offset, cuts SEQ_LEN
    windows and visits them in a seeded random order."""
    g = torch.Generator().manual_seed(SEED)
    while True:
        off = int(torch.randint(SEQ_LEN, (1,), generator=g))
        n = (len(stream) - off) // SEQ_LEN
        wins = stream[off:off + n * SEQ_LEN].view(n, SEQ_LEN)
        perm = torch.randperm(n, generator=g)
        for i in range(0, n - BATCH + 1, BATCH):
            yield wins[perm[i:i + BATCH]]


def lr_at(step: int, steps: int) -> float:
    warm = max(1, int(HP["warmup_frac"] * steps))
    if step < warm:
        return HP["lr"] * (step + 1) / warm
    t = (step - warm) / max(1, steps - warm)
    return HP["lr"] * (HP["min_lr_frac"] + (1 - HP["min_lr_frac"]) * 0.5 * (1 + math.cos(math.pi * t)))


def train(model, stream, steps, heldout, log, measure=0):
    # Weight decay on matrices (incl. the tied embedding), not on the RMSNorm gains.
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": HP["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}], lr=HP["lr"],
                            betas=HP["betas"])
    model.train()
    data, t0 = batches(stream), time.perf_counter()
    for step in range(measure or steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps)
        x = next(data)
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), HP["grad_clip"])
        opt.step()
        if measure:
            print(f"step {step}: loss {loss.item():.3f}  {time.perf_counter() - t0:.1f}s", flush=True)
            continue
        if step % 10 == 0 or step == steps - 1:
            log["train_loss"].append([step, round(loss.item(), 4)])
            print(f"step {step}/{steps} loss {loss.item():.3f} lr {lr_at(step, steps):.2e} "
                  f"{time.perf_counter() - t0:.0f}s", flush=True)
        if (step + 1) % (steps // 4) == 0 and step + 1 < steps:
            ppl = heldout_ppl(model, heldout)
            log["heldout_ppl_checkpoints"].append([step + 1, round(ppl, 3)])
            print(f"  held-out ppl @ {step + 1}: {ppl:.2f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--measure", type=int, default=0, help="time N steps, write nothing")
    args = ap.parse_args()
    # Fixed seeds + a fixed thread count: reruns give identical bytes on the same machine.
    t_start = time.perf_counter()
    random.seed(SEED)
    torch.manual_seed(SEED)
    torch.set_num_threads(2)
    import tokenizers
    import transformers
    from transformers import GenerationConfig

    train_docs, heldout_docs = build_corpus()
    heldout_docs = take_until(heldout_docs, HELDOUT_CAP)
    calib = take_until(random.Random(SEED).sample(train_docs, len(train_docs)), CALIB_TARGET)
    print(f"corpus: {len(train_docs)} train docs, {len(heldout_docs)} held-out docs", flush=True)

    tok = train_tokenizer(train_docs)
    train_stream, heldout_stream = to_stream(tok, train_docs), to_stream(tok, heldout_docs)
    model = make_model()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"tokens: train {len(train_stream)}, held-out {len(heldout_stream)}; params {n_params}")
    if args.measure:
        train(model, train_stream, args.steps, heldout_stream, {}, measure=args.measure)
        return

    log = {"hyperparameters": {**HP, "betas": list(HP["betas"]), "steps": args.steps,
                               "vocab_size": VOCAB_SIZE, "lr_schedule": "linear warmup + cosine"},
           "num_params": n_params, "train_tokens": len(train_stream),
           "heldout_tokens": len(heldout_stream), "train_docs": len(train_docs),
           "heldout_docs": len(heldout_docs), "tokens_seen": args.steps * BATCH * SEQ_LEN,
           "train_loss": [], "heldout_ppl_checkpoints": [],
           "versions": {"python": platform.python_version(),
                        "torch": torch.__version__, "transformers": transformers.__version__,
                        "tokenizers": tokenizers.__version__}}
    log["heldout_ppl_before"] = round(heldout_ppl(model, heldout_stream), 3)
    print(f"held-out ppl before training: {log['heldout_ppl_before']:.2f}", flush=True)
    train(model, train_stream, args.steps, heldout_stream, log)
    log["heldout_ppl_after"] = round(heldout_ppl(model, heldout_stream), 3)
    print(f"held-out ppl after training: {log['heldout_ppl_after']:.2f}", flush=True)

    model.eval()  # greedy samples
    log["samples"] = {}
    for p in PROMPTS:
        ids = torch.tensor([tok.encode(p).ids])
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=32,
                                 do_sample=False, pad_token_id=0)
        log["samples"][p] = tok.decode(out[0].tolist())
        print(f"  {p!r} -> {log['samples'][p]!r}")

    # ---- write everything
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    MODEL_DIR.mkdir(parents=True, exist_ok=True)
    for name, docs in (("heldout.txt", heldout_docs), ("calibration.txt", calib)):
        (DATA_DIR / name).write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    model.save_pretrained(MODEL_DIR)  # v5: always safetensors; tied lm_head is not stored
    GenerationConfig(bos_token_id=0, eos_token_id=0, pad_token_id=0, do_sample=False,
                     max_new_tokens=32).save_pretrained(MODEL_DIR)
    save_tokenizer(tok, MODEL_DIR)
    log["wall_time_s"] = round(time.perf_counter() - t_start, 1)
    log["cpu_time_s"] = round(time.process_time(), 1)  # less sensitive to other load
    (MODEL_DIR / "training_log.json").write_text(json.dumps(log, indent=2, sort_keys=True) + "\n")
    print(f"done in {log['wall_time_s']}s -> {MODEL_DIR}")


if __name__ == "__main__":
    main()
