"""Run the performance benchmark: ``.venv/bin/python -m bench.perf.run`` (or ``bash bench/perf/run.sh``).

Sections (each can be skipped): packages (export every model for every target, timed, peak RSS),
peers (Optimum ONNX, llama.cpp GGUF f32/Q8_0/Q4_0 in their own venvs), throughput (prefill tok/s
for a 128-token prompt and decode tok/s, every variant in its own worker process with pinned
threads, repetitions interleaved, medians; memory bandwidth measured in the same loop),
export scaling (L, 2L, 4L layers, one subprocess per export). Writes
``bench/results/perf-<date>.json`` and ``.md``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
from pathlib import Path

from bench.perf import models, peers, report
from bench.perf.membw import Bandwidth
from bench.perf.procs import Worker, main_python, measured, thread_env

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench" / "results"
SLMPACK = REPO / ".venv" / "bin" / "slmpack"


RECIPES = Path(__file__).resolve().parent / "recipes"
# quantized variants: label -> --quant value (preset or recipe file). Labels name the arithmetic:
# weight-only (int8, int4: float activations) vs dynamic int8 activations (8da8w ~ llama.cpp Q8_0,
# 8da4w ~ Q4_0: both quantize activations to int8 at run time).
QUANTS = {"int8": "int8", "int4": "int4", "8da8w": str(RECIPES / "8da8w.toml"), "8da4w": "8da4w"}


def export_package(model_dir: Path, target: str, out: Path, validate: bool, force: bool,
                   quant: str | None = None) -> dict:
    """``slmpack export`` in a subprocess: time, peak RSS, and what the manifest says."""
    record = out.with_name(out.name + ".export.json")  # the measurement of the export that made `out`
    if (out / "manifest.json").is_file() and not force:
        rec = {"cached": True, **(json.loads(record.read_text()) if record.is_file() else {})}
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        cmd = [SLMPACK, "export", model_dir, "--target", target, "--out", out, "--force", "--json"]
        cmd += ["--quant", QUANTS[quant]] if quant else []
        rec = measured(cmd + ([] if validate else ["--no-validate"]), env=thread_env(2))
        if rec["rc"] not in (0, 1):
            return {"ok": False, **rec}
        record.write_text(json.dumps({k: v for k, v in rec.items() if k != "tail"}))
    m = json.loads((out / "manifest.json").read_text())
    size = sum(p.stat().st_size for p in out.glob("model.*") if p.is_file())
    v = m.get("validation") or {}
    rep = m.get("report", {})
    return {"ok": True, **{k: v_ for k, v_ in rec.items() if k != "tail"}, "path": str(out), "target": target,
            "quant": quant, "bits_per_weight": ((m.get("quantization") or {}).get("summary") or {}).get("bits_per_weight"),
            "artifact_bytes": size, "fusions": rep.get("fusions"),
            "attention_blocks_fused": rep.get("attention_blocks_fused"), "node_count": rep.get("node_count"),
            "validation": {k: v.get(k) for k in ("passed",)} | {
                "top1": (v.get("heldout") or {}).get("top1_agreement"),
                "greedy_match": (v.get("greedy") or {}).get("match"),
                "max_abs_diff": max((v.get("vectors") or {}).get("prefill_max_abs_diff", 0),
                                    (v.get("vectors") or {}).get("decode_max_abs_diff", 0)) if v else None}}


def variants_for(name: str, model_dir: Path, pkgs: dict, peer: dict) -> list[dict]:
    """Every runtime to time for one model: eager, each exported target, each peer artifact."""
    out = [{"variant": "pytorch-eager", "python": main_python(), "backend": "eager", "path": model_dir, "bytes": None}]
    for key, rec in pkgs.items():
        if rec.get("ok"):
            probe, target = None, rec["target"]
            if target == "onnx":  # runtime-only process: onnxruntime and the artifact, nothing else imported
                probe = (main_python(), "ort-genai-io", str(Path(rec["path"]) / "model.onnx"))
            out.append({"variant": f"slmpack-{key}", "python": main_python(), "backend": f"target:{target}",
                        "path": rec["path"], "bytes": rec["artifact_bytes"], "probe": probe, "quant": rec.get("quant")})
    opt = peer.get("optimum", {})
    if opt.get("ok"):
        out.append({"variant": "optimum-onnx (ort)", "python": peers._py("optimum"), "backend": "ort-genai-io",
                    "path": opt["path"], "bytes": Path(opt["path"]).stat().st_size
                    + sum(p.stat().st_size for p in Path(opt["path"]).parent.glob("model.onnx_data")),
                    "probe": (peers._py("optimum"), "ort-genai-io", opt["path"])})
    for q, path in (peer.get("llamacpp", {}).get("files") or {}).items():
        out.append({"variant": f"llama.cpp {q}", "python": peers._py("llamacpp"), "backend": "llamacpp",
                    "path": path, "bytes": Path(path).stat().st_size, "probe": (peers._py("llamacpp"), "llamacpp", path)})
    return out


def throughput(model_name: str, variants: list[dict], threads: int, reps: int, prompt: int, decode: int,
               vocab: int, bw: Bandwidth) -> dict:
    """Interleaved repetitions over every variant (one worker process each); medians."""
    workers, errors = {}, {}
    for v in variants:
        try:
            workers[v["variant"]] = Worker(v["variant"], v["python"], v["backend"], v["path"], threads, vocab)
        except Exception as e:  # a variant that cannot start is recorded, not fatal
            errors[v["variant"]] = str(e)[-800:]
    samples = {k: {"prefill": [], "decode": []} for k in workers}
    bw_samples = {"read": [], "copy": []}
    try:
        for w in workers.values():  # warm-up (allocator, prepacking, thread pools)
            w.ask(cmd="bench", prompt=prompt, decode=4, seed=99)
        for rep in range(reps):
            order = list(workers)
            order = order[rep % len(order):] + order[: rep % len(order)]  # rotate who goes first
            for name in order:
                r = workers[name].ask(cmd="bench", prompt=prompt, decode=decode, seed=rep)
                samples[name]["prefill"].append(prompt / r["prefill_s"])
                samples[name]["decode"].append(decode / r["decode_s"])
            bw_samples["read"].append(bw.read(threads))
            bw_samples["copy"].append(bw.copy(threads))
        mem = {name: {**w.ask(cmd="mem"), **w.ready} for name, w in workers.items()}
    finally:
        for w in workers.values():
            w.close()
    probes = {}
    for v in variants:  # peak RSS of each runtime alone in a fresh process (load, prefill, decode)
        if v.get("probe") and v["variant"] in samples:
            py, backend, path = v["probe"]
            try:
                w = Worker(v["variant"] + " (rss probe)", py, backend, path, threads, vocab)
                w.ask(cmd="bench", prompt=prompt, decode=decode, seed=0)
                probes[v["variant"]] = {**w.ask(cmd="mem"), **w.ready}
                w.close()
            except Exception as e:
                probes[v["variant"]] = {"error": str(e)[-500:]}
    rows = {}
    for v in variants:
        name = v["variant"]
        if name not in samples:
            rows[name] = {"error": errors.get(name)}
            continue
        s = samples[name]
        rows[name] = {"prefill_tok_s": statistics.median(s["prefill"]), "decode_tok_s": statistics.median(s["decode"]),
                      "prefill_samples": [round(x, 1) for x in s["prefill"]],
                      "decode_samples": [round(x, 2) for x in s["decode"]],
                      "artifact_bytes": v["bytes"], "memory": mem[name], "probe_memory": probes.get(name),
                      "quant": v.get("quant")}
    return {"threads": threads, "reps": reps, "prompt": prompt, "decode": decode, "variants": rows,
            "bandwidth_gb_s": {k: statistics.median(x) for k, x in bw_samples.items()},
            "bandwidth_samples": {k: [round(x, 2) for x in xs] for k, xs in bw_samples.items()}}


def import_baseline(model_dir: Path, workdir: Path) -> dict:
    """Peak RSS of an export that stops at preflight (every import done, no model loaded)."""
    rec = measured([SLMPACK, "export", model_dir, "--target", "onnx", "--out", workdir / "no-such-dir" / "x"],
                   env=thread_env(2))
    return {"peak_rss_mb": rec["peak_rss_mb"], "seconds": rec["seconds"], "rc": rec["rc"]}


def export_scaling(workdir: Path, depths: list[int]) -> list[dict]:
    (workdir / "scaling").mkdir(parents=True, exist_ok=True)
    rows = []
    for layers in depths:
        d = models.smollm_shaped(workdir, layers)
        out = workdir / "scaling" / f"L{layers}"
        rec = measured([SLMPACK, "export", d, "--target", "onnx", "--out", out, "--force", "--no-validate", "--json"],
                       env=thread_env(2))
        rows.append({"layers": layers, "params": models.num_params(d), **{k: v for k, v in rec.items() if k != "tail"},
                     **({"tail": rec["tail"]} if rec["rc"] else {})})
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/slmpack-bench"))
    ap.add_argument("--models", nargs="+", default=["demo", "smollm"], choices=["demo", "smollm"])
    ap.add_argument("--targets", nargs="+", default=["onnx"])
    ap.add_argument("--quants", nargs="*", default=list(QUANTS), choices=list(QUANTS),
                    help="quantized packages of each target to time as well (exported without validation: "
                         "their accuracy is bench/quality's job)")
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--decode", type=int, default=32)
    ap.add_argument("--depths", nargs="+", type=int, default=[4, 8, 16])
    ap.add_argument("--peers", nargs="*", default=["optimum", "llamacpp"], choices=["optimum", "llamacpp"])
    ap.add_argument("--no-peers", action="store_true", help="same as --peers with no names")
    ap.add_argument("--no-scaling", action="store_true")
    ap.add_argument("--reexport", action="store_true", help="export packages even if cached in --workdir")
    ap.add_argument("--build-peers", action="store_true", help="create missing peer venvs (llama.cpp: >1 h here)")
    ap.add_argument("--llamacpp-sdist", type=Path, default=None, help="local llama-cpp-python sdist (else pip download)")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    wd = a.workdir
    wd.mkdir(parents=True, exist_ok=True)
    res: dict = {"date": dt.date.today().isoformat(), "machine": report.machine(), "python": platform.python_version(),
                 "args": {k: str(v) for k, v in vars(a).items()}, "models": {}}
    bw = Bandwidth()
    for name in a.models:
        model_dir = models.demo_dir() if name == "demo" else models.smollm_shaped(wd, 30)
        facts = models.spec_facts(model_dir)
        pkgs = {t: export_package(model_dir, t, wd / "pkg" / name / t, validate=True, force=a.reexport)
                for t in a.targets}
        for t in a.targets:
            for q in a.quants:
                pkgs[f"{t}-{q}"] = export_package(model_dir, t, wd / "pkg" / name / f"{t}-{q}", validate=False,
                                                  force=a.reexport, quant=q)
        peer = {}
        wanted = [] if a.no_peers else a.peers
        if "optimum" in wanted:
            peer["optimum"] = peers.optimum_export(model_dir, wd / "optimum" / name, a.build_peers)
        if "llamacpp" in wanted:
            peer["llamacpp"] = peers.llamacpp_ggufs(model_dir, wd, name, a.llamacpp_sdist, a.build_peers)
        variants = variants_for(name, model_dir, pkgs, peer)
        runs = [throughput(name, variants, t, a.reps, a.prompt, a.decode, min(facts["vocab"], 4000), bw)
                for t in a.threads]
        res["models"][name] = {"facts": facts, "packages": pkgs, "peers": peer, "throughput": runs}
    res["peer_builds"] = peers.build_record()
    res["export_import_baseline"] = import_baseline(models.demo_dir(), wd)
    if not a.no_scaling:
        res["export_scaling"] = export_scaling(wd, a.depths)
    res["summary"] = report.summarize(res)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = a.out or RESULTS / f"perf-{res['date']}.json"
    out.write_text(json.dumps(res, indent=1, sort_keys=True, default=str) + "\n")
    out.with_suffix(".md").write_text(report.markdown(res))
    print(out.with_suffix(".md").read_text())
    print(f"results: {out}")


if __name__ == "__main__":
    main()
