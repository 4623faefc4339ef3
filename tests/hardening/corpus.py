"""The malicious model corpus, generated at test time (no committed binaries).

Each case mutates a fresh copy of a tiny checkpoint (``base/model``); ``base/outside`` holds files the
export must never open. A case is (name, mutate(base) -> extra CLI args, exit code, error code).
"""
from __future__ import annotations

import json
import os
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from safetensors.numpy import save_file

SECRET = "/etc/passwd"


@dataclass(frozen=True)
class Case:
    name: str
    mutate: Callable[[Path], list]
    exit_code: int
    code: str


def model(b: Path) -> Path:
    return b / "model"


def outside(b: Path) -> Path:
    return b / "outside"


class Payload:
    """Pickle that would create base/PWNED if it were ever unpickled without weights_only."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_pickle(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps({"model.embed_tokens.weight": Payload(marker)}))


def edit_config(b: Path, **kw) -> None:
    p = model(b) / "config.json"
    cfg = json.loads(p.read_text())
    for k, v in kw.items():
        if v is ...:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    p.write_text(json.dumps(cfg))


def raw_config(b: Path, text: str | bytes, name: str = "config.json") -> None:
    p = model(b) / name
    p.write_bytes(text.encode() if isinstance(text, str) else text)


def write_index(b: Path, weight_map) -> None:
    (model(b) / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def index_one(b: Path, shard) -> None:
    write_index(b, {"model.embed_tokens.weight": shard})


def symlink(b: Path, name: str, target, follow: bool = False) -> list:
    p = model(b) / name
    if p.exists() or p.is_symlink():
        p.unlink()
    p.symlink_to(target)
    return ["--follow-symlinks"] if follow else []


def secret_copy(b: Path, name: str) -> Path:
    src = model(b) / name
    dst = outside(b) / name
    dst.write_bytes(src.read_bytes() if src.exists() else b'{"secret": true}')
    return dst


def replace_with_fifo(b: Path, name: str) -> None:
    p = model(b) / name
    if p.exists():
        p.unlink()
    os.mkfifo(p)


def replace_with_device(b: Path, name: str) -> None:
    p = model(b) / name
    p.unlink()
    os.mknod(p, 0o600 | 0o020000, os.makedev(1, 3))  # a character device (/dev/null's numbers)


def set_tensor(b: Path, fn) -> None:
    from safetensors.numpy import load_file

    p = model(b) / "model.safetensors"
    tensors = load_file(str(p))
    fn(tensors)
    save_file(tensors, str(p), metadata={"format": "pt"})


def poison(value):
    def fn(t):
        k = "model.layers.0.self_attn.q_proj.weight"
        t[k] = t[k].copy()
        t[k].flat[3] = value
    return fn


def relabel_i32(b: Path) -> None:
    """Rewrite one F32 tensor's dtype to I32 in the header (same byte size: a 'valid' file)."""
    p = model(b) / "model.safetensors"
    data = p.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    header["model.norm.weight"]["dtype"] = "I32"
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    p.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n:])


def header_edit(b: Path, fn) -> None:
    p = model(b) / "model.safetensors"
    data = p.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    fn(header)
    raw = json.dumps(header).encode()
    p.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n:])


def raw_weights(b: Path, data: bytes) -> None:
    (model(b) / "model.safetensors").write_bytes(data)


def deep(n: int) -> str:
    return "[" * n + "]" * n


def _first(h):
    return next(k for k in h if k != "__metadata__")


def _offsets(fn):
    def edit(h):
        fn(h[_first(h)]["data_offsets"])
    return edit


def out_args(b: Path, out: Path, *extra) -> list:
    return ["--out", str(out), *extra]


def cases() -> list[Case]:
    C = []
    add = lambda name, m, code, exit_code=2: C.append(Case(name, m, exit_code, code))  # noqa: E731
    tok_files = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
                 "chat_template.jinja")
    # defect 1: tokenizer-side files through symlinks
    for name in tok_files:
        add(f"d1-{name}-to-etc-passwd", lambda b, n=name: symlink(b, n, SECRET), "E_SYMLINK_REFUSED")
        add(f"d1-{name}-to-outside", lambda b, n=name: symlink(b, n, secret_copy(b, n)), "E_SYMLINK_REFUSED")
        add(f"d1-{name}-follow-to-outside", lambda b, n=name: symlink(b, n, secret_copy(b, n), True),
            "E_PATH_UNSAFE")
    add("d1-config-to-outside", lambda b: symlink(b, "config.json", secret_copy(b, "config.json")), "E_SYMLINK_REFUSED")
    add("d1-weights-to-outside", lambda b: symlink(b, "model.safetensors", secret_copy(b, "model.safetensors")),
        "E_SYMLINK_REFUSED")
    add("d1-weights-follow-to-outside",
        lambda b: symlink(b, "model.safetensors", secret_copy(b, "model.safetensors"), True), "E_PATH_UNSAFE")
    add("d1-weights-dangling-link", lambda b: symlink(b, "model.safetensors", b / "nowhere"), "E_SYMLINK_REFUSED")
    # defect 2: shard names not confined
    for label, shard in [("dotdot", "../outside/model.safetensors"), ("etc-passwd", SECRET),
                         ("absolute", "/tmp/model.safetensors"), ("subdir", "sub/model.safetensors"),
                         ("dot-segment", "./model.safetensors"), ("empty", ""), ("dotdot-only", ".."),
                         ("dot", "."), ("backslash", "..\\outside\\model.safetensors"),
                         ("nul-byte", "model.safetensors\0.txt"), ("overlong", "a" * 300 + ".safetensors")]:
        add(f"d2-shard-{label}", lambda b, s=shard: (secret_copy(b, "model.safetensors"), index_one(b, s))[1] or [],
            "E_PATH_UNSAFE")
    add("d2-shard-not-string", lambda b: index_one(b, 123) or [], "E_PATH_UNSAFE")
    add("d2-shard-list", lambda b: index_one(b, ["model.safetensors"]) or [], "E_PATH_UNSAFE")
    add("d2-weight-map-list", lambda b: write_index(b, ["model.safetensors"]) or [], "E_WEIGHTS_CORRUPT")
    add("d2-weight-map-empty", lambda b: write_index(b, {}) or [], "E_WEIGHTS_CORRUPT")
    add("d2-index-not-json", lambda b: raw_config(b, "{not json", "model.safetensors.index.json") or [],
        "E_WEIGHTS_CORRUPT")
    add("d2-index-deep-json", lambda b: raw_config(b, deep(200_000), "model.safetensors.index.json") or [],
        "E_WEIGHTS_CORRUPT")
    add("d2-shard-symlink-outside",
        lambda b: (symlink(b, "shard.safetensors", secret_copy(b, "model.safetensors")),
                   index_one(b, "shard.safetensors"))[0], "E_SYMLINK_REFUSED")
    add("unicode-shard-missing", lambda b: index_one(b, "модель\u202e.safetensors") or [], "E_WEIGHTS_MISSING")
    # defect 3 and pickle payloads
    add("d3-index-names-bin", lambda b: (write_pickle(model(b) / "pytorch_model.bin", b / "PWNED"),
                                         index_one(b, "pytorch_model.bin"))[1] or [], "E_PICKLE_REFUSED")
    add("d3-index-names-pt", lambda b: (write_pickle(model(b) / "w.pt", b / "PWNED"), index_one(b, "w.pt"))[1] or [],
        "E_PICKLE_REFUSED")
    add("pickle-only-checkpoint", lambda b: ((model(b) / "model.safetensors").unlink(),
                                             write_pickle(model(b) / "pytorch_model.bin", b / "PWNED"))[1] or [],
        "E_PICKLE_REFUSED")
    add("pickle-payload-allow-pickle", lambda b: ((model(b) / "model.safetensors").unlink(),
                                                  write_pickle(model(b) / "pytorch_model.bin", b / "PWNED"))[1]
        or ["--allow-pickle"], "E_WEIGHTS_CORRUPT")
    add("pickle-not-a-state-dict", lambda b: ((model(b) / "model.safetensors").unlink(),
                                              (model(b) / "w.bin").write_bytes(pickle.dumps([1, 2])))[1] and
        ["--allow-pickle"], "E_WEIGHTS_CORRUPT")
    add("index-names-unknown-type", lambda b: ((model(b) / "w.npz").write_bytes(b"PK"), index_one(b, "w.npz"))[1]
        or ["--allow-pickle"], "E_WEIGHTS_CORRUPT")
    # defect 7: FIFOs and device files
    for name in ("model.safetensors", "config.json", "tokenizer.json", "generation_config.json"):
        add(f"d7-fifo-{name}", lambda b, n=name: replace_with_fifo(b, n) or [], "E_NOT_REGULAR_FILE")
    add("d7-chardev-weights", lambda b: replace_with_device(b, "model.safetensors") or [], "E_NOT_REGULAR_FILE")
    add("d7-link-to-dev-zero", lambda b: symlink(b, "model.safetensors", "/dev/zero"), "E_SYMLINK_REFUSED")
    add("d7-link-to-dev-zero-follow", lambda b: symlink(b, "model.safetensors", "/dev/zero", True), "E_PATH_UNSAFE")
    add("d7-dir-named-safetensors", lambda b: ((model(b) / "model.safetensors").unlink(),
                                               (model(b) / "model.safetensors").mkdir())[1] or [],
        "E_NOT_REGULAR_FILE")
    # defect 8: weights and config values
    add("d8-nan-weight", lambda b: set_tensor(b, poison(np.nan)) or [], "E_WEIGHTS_NONFINITE")
    add("d8-inf-weight", lambda b: set_tensor(b, poison(np.inf)) or [], "E_WEIGHTS_NONFINITE")
    add("d8-f32-relabelled-i32", lambda b: relabel_i32(b) or [], "E_WEIGHTS_DTYPE")
    add("d8-eps-nan-literal", lambda b: raw_config(b, (model(b) / "config.json").read_text()
                                                   .replace('"rms_norm_eps": 1e-05', '"rms_norm_eps": NaN')) or [],
        "E_CONFIG_INVALID")
    add("d8-eps-overflow-inf", lambda b: raw_config(b, (model(b) / "config.json").read_text()
                                                    .replace('"rms_norm_eps": 1e-05', '"rms_norm_eps": 1e999')) or [],
        "E_CONFIG_INVALID")
    for label, kw in [("eps-zero", {"rms_norm_eps": 0}), ("eps-negative", {"rms_norm_eps": -1e-5}),
                      ("eps-string", {"rms_norm_eps": "1e-5"}),
                      ("theta-zero", {"rope_theta": 0, "rope_parameters": {"rope_type": "default", "rope_theta": 0}}),
                      ("theta-negative", {"rope_parameters": {"rope_type": "default", "rope_theta": -10000.0}}),
                      ("vocab-one", {"vocab_size": 1}), ("hidden-zero", {"hidden_size": 0}),
                      ("layers-bool", {"num_hidden_layers": True}), ("hidden-string", {"hidden_size": "32"}),
                      ("heads-huge", {"num_attention_heads": 2**40}),
                      ("linear-factor-zero", {"rope_parameters": {"rope_type": "linear", "factor": 0,
                                                                  "rope_theta": 10000.0}}),
                      ("rope-params-list", {"rope_parameters": [1, 2]}),
                      ("dtype-int", {"dtype": "int32"}), ("eos-string", {"eos_token_id": "</s>"}),
                      ("tie-string", {"tie_word_embeddings": "yes"}),
                      ("llama3-without-any-max-positions",  # found by bench/fuzz: TypeError before
                       {"max_position_embeddings": ..., "rope_parameters": {"rope_type": "llama3", "factor": 8.0,
                                                                            "rope_theta": 5e5}})]:
        add(f"config-{label}", lambda b, kw=kw: edit_config(b, **kw) or [], "E_CONFIG_INVALID")
    add("config-deep-json", lambda b: raw_config(b, deep(200_000)) or [], "E_CONFIG_INVALID")
    add("config-not-utf8", lambda b: raw_config(b, b"\xff\xfe{}") or [], "E_CONFIG_INVALID")
    add("config-array", lambda b: raw_config(b, "[1, 2]") or [], "E_CONFIG_INVALID")
    # generation_config.json types
    for label, gen in [("eos-string", {"eos_token_id": "x"}), ("max-length-negative", {"max_length": -1}),
                       ("temperature-string", {"temperature": "hot"}), ("eos-list-of-str", {"eos_token_id": ["a"]}),
                       ("do-sample-int", {"do_sample": 1})]:
        add(f"genconfig-{label}", lambda b, g=gen: raw_config(b, json.dumps(g), "generation_config.json") or [],
            "E_CONFIG_INVALID")
    add("genconfig-deep-json", lambda b: raw_config(b, deep(200_000), "generation_config.json") or [],
        "E_CONFIG_INVALID")
    add("genconfig-list", lambda b: raw_config(b, "[]", "generation_config.json") or [], "E_CONFIG_INVALID")
    add("tokenizer-garbage", lambda b: raw_config(b, b"\x00\xff garbage", "tokenizer.json") or [], "E_TOKENIZER")
    add("tokenizer-config-deep", lambda b: raw_config(b, deep(200_000), "tokenizer_config.json") or [],
        "E_CONFIG_INVALID")
    # safetensors headers
    add("st-header-length-2^63", lambda b: raw_weights(b, struct.pack("<Q", 2**63) + b"{}") or [],
        "E_WEIGHTS_CORRUPT")
    add("st-header-oversize-claim", lambda b: raw_weights(b, struct.pack("<Q", 150_000_000) + b"{" * 64) or [],
        "E_WEIGHTS_CORRUPT")
    add("st-short-file", lambda b: raw_weights(b, b"\x01\x02") or [], "E_WEIGHTS_CORRUPT")
    add("st-header-not-json", lambda b: raw_weights(b, struct.pack("<Q", 4) + b"{{{{") or [], "E_WEIGHTS_CORRUPT")
    add("st-header-deep-json", lambda b: raw_weights(b, struct.pack("<Q", 400_000) + (("{\"a\":" * 100_000) +
                                                                                     "}" * 100_000).encode()[:400_000])
        or [], "E_WEIGHTS_CORRUPT")
    add("st-offsets-past-end", lambda b: header_edit(b, _offsets(lambda o: o.__setitem__(1, o[1] + 10**9))) or [],
        "E_WEIGHTS_CORRUPT")
    add("st-offsets-overlap", lambda b: header_edit(b, _offsets(lambda o: o.__setitem__(0, o[0] + 4))) or [],
        "E_WEIGHTS_CORRUPT")
    add("st-unknown-dtype", lambda b: header_edit(b, lambda h: h[_first(h)].__setitem__("dtype", "F8_E9M9")) or [],
        "E_WEIGHTS_CORRUPT")
    add("st-negative-shape", lambda b: header_edit(b, lambda h: h[_first(h)].__setitem__("shape", [-1, 4])) or [],
        "E_WEIGHTS_CORRUPT")
    add("st-trailing-bytes", lambda b: (model(b) / "model.safetensors").open("ab").write(b"\0" * 16) and [],
        "E_WEIGHTS_CORRUPT")
    # outputs and other user inputs (defects 6, 10)
    add("d6-force-over-model-dir", lambda b: ["--out", str(model(b)), "--force"], "E_OUTPUT_EXISTS")
    add("d6-force-over-parent", lambda b: ["--out", str(b), "--force"], "E_OUTPUT_EXISTS")
    add("d6-force-over-user-folder", lambda b: ((b / "work" / "user").mkdir(), (b / "work" / "user" / "notes.txt")
                                                .write_text("mine"))[1] and
        ["--out", str(b / "work" / "user"), "--force"], "E_OUTPUT_EXISTS")
    add("d6-force-over-file", lambda b: (b / "work" / "f").write_text("x") and ["--out", str(b / "work" / "f"),
                                                                                "--force"], "E_OUTPUT_EXISTS")
    add("out-exists-no-force", lambda b: (b / "work" / "pkg").mkdir() or ["--out", str(b / "work" / "pkg")],
        "E_OUTPUT_EXISTS")
    add("d10-out-dangling-symlink", lambda b: (b / "work" / "dl").symlink_to(b / "work" / "nowhere") or
        ["--out", str(b / "work" / "dl")], "E_OUTPUT_UNWRITABLE")
    add("d10-out-in-proc", lambda b: ["--out", "/proc/self/slmpack-out"], "E_OUTPUT_UNWRITABLE")
    add("d10-out-enametoolong", lambda b: ["--out", str(b / "work" / ("x" * 300))], "E_OUTPUT_UNWRITABLE")
    add("d10-out-parent-missing", lambda b: ["--out", str(b / "work" / "no" / "pkg")], "E_OUTPUT_UNWRITABLE")
    add("d10-eval-text-missing", lambda b: ["--eval-text", str(b / "work" / "missing.txt")], "E_EVAL_TEXT")
    add("d10-eval-text-fifo", lambda b: os.mkfifo(b / "work" / "eval.txt") or
        ["--eval-text", str(b / "work" / "eval.txt")], "E_EVAL_TEXT")
    add("d10-eval-text-not-utf8", lambda b: (b / "work" / "e.txt").write_bytes(b"\xff\xfe\xfa") and
        ["--eval-text", str(b / "work" / "e.txt")], "E_EVAL_TEXT")
    add("keep-failed-exists", lambda b: (b / "work" / "kept").mkdir() or ["--keep-failed", str(b / "work" / "kept")],
        "E_OUTPUT_EXISTS")
    return C
