"""Quantization quality benchmark: accuracy vs size of the demo model per target and recipe.

    .venv/bin/python -m bench.quality.run                 # every quant-capable target, every config
    .venv/bin/python -m bench.quality.run --configs int4-rtn-g32 int4-gptq-g32 --targets onnx

For every configuration below, the bundled demo model is exported to every target through the
real pipeline (calibration, encoding, read-back, quantized ladder) and the package's own
validation numbers are collected: artifact size, perplexity / KL / top-1 vs the fp32 reference
on the held-out text, agreement with the plan's fake-quant reference, read-back result and
export time. The first target (ONNX) calibrates; every other target encodes *that package's
plan* (``QuantConfig(plan_from=...)``, CLI ``--quant-plan``): one plan, the same integers in
every artifact. A target that cannot run a plan refuses it before any work; the refusal and its
reason are recorded. Then every artifact's top-1 prediction at every held-out position is
recorded and compared across targets (the issue's "same plan, >= 99% agreement between targets").

Core ML runs with fp32 compute here (``CoreMLOptions(compute_precision="fp32")``) so its rows
measure quantization, not fp16 arithmetic; its KV-cache state is fp16 regardless (Core ML states).

Writes ``bench/results/quality.json``, ``quality.md`` (the README table) and ``quality.png``
(accuracy vs size; needs the ``bench`` extra: matplotlib).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent / "results"
G128 = HERE / "recipes" / "int4_g128.toml"
NON_EXPORT_STAGES = ("reference test vectors", "validate")

# name -> QuantConfig kwargs (None: the fp32 baseline)
CONFIGS: dict[str, dict | None] = {
    "fp32": None,
    "int8-rtn": {"recipe": "int8"},
    "int4-rtn-g32": {"recipe": "int4"},
    "int4-rtn-g128": {"recipe": str(G128)},
    "int4-gptq-g32": {"recipe": "int4", "algorithm": "gptq"},
    "int4-awq-g32": {"recipe": "int4", "algorithm": "awq"},
    "8da4w": {"recipe": "8da4w"},
    "w8a8": {"recipe": "w8a8"},
    "mixed-ppl0.05pct": {"recipe": "int4", "max_ppl_increase_pct": 0.05},   # budget on calibration text
    "mixed-size3.3MB": {"recipe": "int4", "max_size_bytes": "3.3MB"},
}


def quant_targets() -> list[str]:
    from slmpack.targets import registry

    return [t for t in registry.available()
            if registry.get(t).capabilities(registry.get(t).options_type()).quant is not None]


def bench_options(target: str):
    """Target options for the bench (None: the target's defaults)."""
    if target == "coreml":
        from slmpack.targets.coreml.options import CoreMLOptions

        return CoreMLOptions(compute_precision="fp32")
    return None


def heldout_ids(n: int):
    """The held-out token ids the ladder uses (bundled heldout.txt, demo tokenizer)."""
    from slmpack.exporter.inputs import heldout_tokens, load_tokenizer
    from slmpack.exporter.pipeline import load_spec, resolve_model_dir

    model_dir = resolve_model_dir(None)
    return heldout_tokens(load_tokenizer(model_dir), load_spec(model_dir).vocab_size, n, None)[0]


def predictions(target: str, pkg, ids):
    """The artifact's top-1 next token at every held-out position (windows as the ladder uses)."""
    import numpy as np

    from slmpack.targets import registry

    runner = registry.get(target).runner(pkg.path, pkg.manifest)
    window = min(runner.max_prompt, 128)
    out = []
    for start in range(0, len(ids) - 1, window):
        chunk = ids[start:min(start + window, len(ids) - 1)]   # = check_heldout's windows
        runner.reset()
        out.append(np.asarray(runner.prefill(chunk)).argmax(-1))
    return np.concatenate(out)


def cross_target(preds: dict, plan_sha: dict | None = None) -> list[dict]:
    """Per config: top-1 agreement between every pair of targets (``same_plan``: their
    quant_plan.safetensors are byte-identical, or both fp32)."""
    import numpy as np

    plan_sha = plan_sha or {}
    rows = []
    for config in sorted({c for _, c in preds}):
        ts = sorted(t for t, c in preds if c == config)
        for i, a in enumerate(ts):
            for b in ts[i + 1:]:
                pa, pb = preds[(a, config)], preds[(b, config)]
                n = min(len(pa), len(pb))
                rows.append({"config": config, "a": a, "b": b, "tokens": n,
                             "same_plan": plan_sha.get((a, config)) == plan_sha.get((b, config)),
                             "top1_agreement": round(float((pa[:n] == pb[:n]).mean()), 6)})
    return rows


def artifact_bytes(pkg) -> int:
    m = pkg.manifest
    names = [m["artifact"]] + [f for f in m["files"]  # + external data / the files of an .mlpackage
                               if f.startswith((m["artifact"] + ".", m["artifact"] + "/"))]
    return sum((pkg.path / f).stat().st_size for f in names if (pkg.path / f).is_file())


def expected_bytes(m: dict) -> int:
    """params x bits/8 + scales: the plan's stored bytes + every other parameter in float32."""
    n = m["model"]["num_parameters"]
    s = (m.get("quantization") or {}).get("summary")
    if not s:
        return 4 * n
    return s["quantized_bytes"] + 4 * (n - s["quantized_params"])


def run_one(target: str, name: str, out: Path, heldout_tokens: int, plan_from: Path | None = None):
    from slmpack import api
    from slmpack.config import ExportConfig, ValidationConfig
    from slmpack.package import plan_sidecar
    from slmpack.progress import Progress
    from slmpack.quantize_config import QuantConfig

    kw = CONFIGS[name]
    prog = Progress(enabled=False)
    cfg = ExportConfig(force=True, validation=ValidationConfig(heldout_tokens=heldout_tokens))
    (out / target).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    quant = None if kw is None else (QuantConfig(plan_from=plan_from) if plan_from else QuantConfig(**kw))
    pkg = api.export(None, target, out / target / name, config=cfg, options=bench_options(target),
                     quant=quant, progress=prog)
    total = time.perf_counter() - t0
    m, v = pkg.manifest, pkg.validation or {}
    fp = v.get("heldout_fp32") or v.get("heldout", {})   # fp32 exports: the ladder is vs fp32
    fq = v.get("heldout", {}) if kw is not None else {}
    q = m.get("quantization") or {}
    size = artifact_bytes(pkg)
    row = {
        "target": target, "config": name, "recipe": q.get("recipe") or "fp32", "precision": m["precision"],
        "bits_per_weight": (q.get("summary") or {}).get("bits_per_weight", 32.0),
        "artifact_bytes": size, "expected_bytes": expected_bytes(m), "size_ratio": round(size / expected_bytes(m), 4),
        "heldout_tokens": fp.get("tokens"), "ppl_fp32": fp.get("perplexity_reference"),
        "ppl": fp.get("perplexity_artifact"), "ppl_delta_pct": fp.get("perplexity_delta_pct"),
        "kl_vs_fp32": fp.get("mean_kl"), "top1_vs_fp32": fp.get("top1_agreement"),
        "top1_vs_fake_quant": fq.get("top1_agreement"), "kl_vs_fake_quant": fq.get("mean_kl"),
        "readback": q.get("readback_passed"), "passed": v.get("passed"),
        "export_s": round(sum(t for k, t in prog.timings.items() if k not in NON_EXPORT_STAGES), 1),
        "total_s": round(total, 1), "stages_s": {k: round(t, 1) for k, t in prog.timings.items()},
        "plan_reused_from": None if plan_from is None else f"{plan_from.parent.name}/{plan_from.name}",
        "plan_sha256": (hashlib.sha256((plan_sidecar(pkg.path) / "quant_plan.safetensors").read_bytes()).hexdigest()
                        if (plan_sidecar(pkg.path) / "quant_plan.safetensors").is_file() else None),
        "package_bytes": sum(f.stat().st_size for f in pkg.path.rglob("*") if f.is_file()),  # what an app copies
    }
    if q.get("mixed_precision"):
        mp = q["mixed_precision"]
        row["mixed_precision"] = {"budget_met": mp.get("budget_met"), "units": {u["unit"]: u["scheme"]
                                                                                for u in mp["units"]}}
    return row, pkg


def checks(rows: list[dict], pairs: list[dict] | None = None) -> list[dict]:
    """The issue's targets, per target: met / not met, with the numbers."""
    out = []
    for config in sorted({p["config"] for p in pairs or ()}, key=lambda c: list(CONFIGS).index(c)):
        ps = [p for p in pairs if p["config"] == config and p.get("same_plan", True)]
        if not ps:
            continue
        worst = min(ps, key=lambda p: p["top1_agreement"])
        out.append({"target": "across targets", "check": f"{config}: same plan, top-1 agreement >= 99% between targets",
                    "met": worst["top1_agreement"] >= 0.99,
                    "detail": f"{len(ps)} pair(s) of {len({p['a'] for p in ps} | {p['b'] for p in ps})} targets; "
                              f"lowest {100 * worst['top1_agreement']:.2f}% ({worst['a']} vs {worst['b']}, "
                              f"{worst['tokens']} tokens)"})
    by = {(r["target"], r["config"]): r for r in rows}
    for t in sorted({r["target"] for r in rows}):
        def get(c):
            return by.get((t, c))

        def add(what, ok, detail):
            out.append({"target": t, "check": what, "met": ok, "detail": detail})

        if get("int8-rtn"):
            r = get("int8-rtn")
            add("int8 ppl <= +1%", r["ppl_delta_pct"] <= 1.0, f"{r['ppl_delta_pct']:+.3f}%")
            add("int8 top-1 >= 97%", r["top1_vs_fp32"] >= 0.97, f"{100 * r['top1_vs_fp32']:.2f}%")
        if get("int4-rtn-g32"):
            r = get("int4-rtn-g32")
            add("int4 g32 ppl <= +4%", r["ppl_delta_pct"] <= 4.0, f"{r['ppl_delta_pct']:+.3f}%")
            rtn = r["ppl_delta_pct"]
            for alg in ("gptq", "awq"):
                x = get(f"int4-{alg}-g32")
                if x and rtn > 0:
                    closed = (rtn - x["ppl_delta_pct"]) / rtn
                    add(f"{alg.upper()} closes >= 50% of the RTN int4 gap", closed >= 0.5,
                        f"RTN {rtn:+.3f}% -> {alg.upper()} {x['ppl_delta_pct']:+.3f}% ({100 * closed:.0f}% closed)")
        for r in rows:
            if by.get((t, r["config"])) is r:
                add(f"{r['config']}: artifact <= 1.05 x (params x bits/8 + scales)", r["size_ratio"] <= 1.05,
                    f"{r['artifact_bytes']} / {r['expected_bytes']} = {r['size_ratio']:.3f}")
    return out


def markdown(rows: list[dict], chk: list[dict], pairs: list[dict] | None = None,
             refused: list[dict] | None = None) -> str:
    head = ("| target | config | bits/w | artifact MB | × expected | ppl (fp32 → pkg) | Δppl | KL vs fp32 "
            "| top-1 vs fp32 | top-1 vs fake-quant | read-back | export s |\n|" + "---|" * 12)
    lines = [head]
    for r in rows:
        fq = "-" if r["top1_vs_fake_quant"] is None else f"{100 * r['top1_vs_fake_quant']:.2f}%"
        rb = {True: "identical", False: "MISMATCH", None: "-"}[r["readback"]]
        lines.append(f"| {r['target']} | {r['config']} | {r['bits_per_weight']:.2f} | {r['artifact_bytes'] / 1e6:.2f} "
                     f"| {r['size_ratio']:.3f} | {r['ppl_fp32']:.2f} → {r['ppl']:.2f} | {r['ppl_delta_pct']:+.2f}% "
                     f"| {r['kl_vs_fp32']:.4f} | {100 * r['top1_vs_fp32']:.2f}% | {fq} | {rb} | {r['export_s']:.0f} |")
    if pairs:
        lines += ["", "Cross-target top-1 agreement (same plan, every held-out position):", "",
                  "| config | target A | target B | same plan bytes | tokens | top-1 agreement |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {p['config']} | {p['a']} | {p['b']} | {'yes' if p.get('same_plan', True) else '**no**'} "
                  f"| {p['tokens']} | {100 * p['top1_agreement']:.2f}% |" for p in pairs]
    if refused:
        lines += ["", "Refused before any work (typed error from the target's preflight):", "",
                  "| target | config | code | reason |", "|---|---|---|---|"]
        lines += [f"| {r['target']} | {r['config']} | {r['code']} | {r['message'][:300].replace('|', '/')} |"
                  for r in refused]
    lines += ["", "| target | check | met | numbers |", "|---|---|---|---|"]
    lines += [f"| {c['target']} | {c['check']} | {'yes' if c['met'] else '**no**'} | {c['detail']} |" for c in chk]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=120)
    labelled: set = set()
    for t in sorted({r["target"] for r in rows}):
        rs = [r for r in rows if r["target"] == t]
        ax.scatter([r["artifact_bytes"] / 1e6 for r in rs], [r["ppl_delta_pct"] for r in rs], label=t)
        for r in rs:   # accuracy is the same on every target that runs a plan: label each config once
            if r["config"] in labelled:
                continue
            labelled.add(r["config"])
            ax.annotate(r["config"], (r["artifact_bytes"] / 1e6, r["ppl_delta_pct"]), fontsize=7,
                        xytext=(4, 3), textcoords="offset points")
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xlabel("artifact size (MB)")
    ax.set_ylabel("held-out perplexity increase over fp32 (%)")
    ax.set_title("slmpack demo model: accuracy vs size")
    if rows:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)
    return True


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--targets", nargs="*", default=None, help="default: every quant-capable target")
    ap.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--heldout-tokens", type=int, default=8192)
    ap.add_argument("--work", type=Path, default=Path("/tmp/slmpack-bench-quality"))
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--merge", action="store_true",
                    help="keep the other rows of an existing quality.json (re-run only --configs)")
    args = ap.parse_args(argv)
    import numpy as np

    from slmpack.errors import SlmpackError, UnsupportedError
    from slmpack.quiet import quiet_third_party

    quiet_third_party()
    targets = args.targets or quant_targets()
    ids = heldout_ids(args.heldout_tokens)
    rows, errors, refused, preds = [], [], [], {}
    for c in args.configs:
        plan_from = None                       # the first target calibrates, the others reuse its plan
        for t in targets:
            try:
                row, pkg = run_one(t, c, args.work, args.heldout_tokens, plan_from)
            except SlmpackError as e:
                if isinstance(e, UnsupportedError):
                    refused.append({"target": t, "config": c, "code": e.code, "message": e.message})
                    print(f"{t:10s} {c:16s} refused [{e.code}] {e.message[:150]}", flush=True)
                else:
                    errors.append({"target": t, "config": c, "error": f"{e.code}: {e.message}"})
                    print(f"{t:10s} {c:16s} FAILED {errors[-1]['error'][:300]}", flush=True)
                continue
            except Exception as e:  # keep going: one failing config must not lose the others
                errors.append({"target": t, "config": c, "error": f"{type(e).__name__}: {e}"})
                print(f"{t:10s} {c:16s} FAILED {errors[-1]['error'][:300]}", flush=True)
                continue
            if CONFIGS[c] is not None and plan_from is None:
                plan_from = pkg.path
            rows.append(row)
            preds[(t, c)] = predictions(t, pkg, ids)
            pred_dir = args.work / "predictions"
            pred_dir.mkdir(parents=True, exist_ok=True)
            np.save(pred_dir / f"{t}__{c}.npy", preds[(t, c)])   # reused by --merge runs
            r = rows[-1]
            print(f"{t:10s} {c:16s} {r['artifact_bytes'] / 1e6:6.2f} MB  Δppl {r['ppl_delta_pct']:+7.3f}%  "
                  f"top-1 {100 * r['top1_vs_fp32']:6.2f}%  passed {r['passed']}  {r['total_s']:.0f}s", flush=True)
    old_path = args.results / "quality.json"
    if args.merge and old_path.is_file():
        prev = json.loads(old_path.read_text())
        done = {(r["target"], r["config"]) for r in rows}
        old = [r for r in prev["rows"] if (r["target"], r["config"]) not in done]
        order = {c: i for i, c in enumerate(CONFIGS)}
        rows = sorted(old + rows, key=lambda r: (r["target"], order.get(r["config"], len(order))))
        refused = [r for r in prev.get("refused", [])
                   if (r["target"], r["config"]) not in done and (r["target"] not in targets
                                                              or r["config"] not in args.configs)] + refused
        for r in old:   # plan digests and predictions of rows kept from the earlier run (same --work)
            qp = args.work / r["target"] / r["config"] / "quant_plan.safetensors"
            if "plan_sha256" not in r:
                r["plan_sha256"] = hashlib.sha256(qp.read_bytes()).hexdigest() if qp.is_file() else None
            f = args.work / "predictions" / f"{r['target']}__{r['config']}.npy"
            if f.is_file() and (r["target"], r["config"]) not in preds:
                preds[(r["target"], r["config"])] = np.load(f)
    pairs = cross_target(preds, {(r["target"], r["config"]): r.get("plan_sha256") for r in rows})
    chk = checks(rows, pairs)
    args.results.mkdir(parents=True, exist_ok=True)
    meta = {"model": "slmpack/demo_model", "heldout_tokens": args.heldout_tokens, "targets": targets,
            "python": platform.python_version(), "cpus": os.cpu_count(),
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()]}
    doc = {"meta": meta, "rows": rows, "cross_target": pairs, "refused": refused, "checks": chk, "errors": errors}
    (args.results / "quality.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    (args.results / "quality.md").write_text(markdown(rows, chk, pairs, refused))
    made = plot(rows, args.results / "quality.png")
    print(markdown(rows, chk, pairs, refused))
    print(f"wrote {args.results / 'quality.json'}, quality.md" + (", quality.png" if made else
                                                                     " (no plot: pip install '.[bench]')"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
