"""Quantization quality benchmark: accuracy vs size of the demo model per target and recipe.

    .venv/bin/python -m bench.quality.run                 # every quant-capable target, every config
    .venv/bin/python -m bench.quality.run --configs int4-rtn-g32 int4-gptq-g32 --targets onnx

For every target in the registry that declares ``quant_capabilities`` (ONNX now; the others join
when their ``quantize.py`` lands) and every configuration below, the bundled demo model is
exported through the real pipeline (calibration, encoding, read-back, quantized ladder) and the
package's own validation numbers are collected: artifact size, perplexity / KL / top-1 vs the
fp32 reference on the held-out text, agreement with the plan's fake-quant reference, read-back
result and export time. Writes ``bench/results/quality.json``, ``quality.md`` (the README table)
and ``quality.png`` (accuracy vs size; needs the ``bench`` extra: matplotlib).
"""
from __future__ import annotations

import argparse
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

    return [t for t in registry.available() if hasattr(registry.get(t), "quant_capabilities")]


def artifact_bytes(pkg) -> int:
    m = pkg.manifest
    names = [m["artifact"]] + [f for f in m["files"] if f.startswith(m["artifact"] + ".")]  # + external data
    return sum((pkg.path / f).stat().st_size for f in names if (pkg.path / f).is_file())


def expected_bytes(m: dict) -> int:
    """params x bits/8 + scales: the plan's stored bytes + every other parameter in float32."""
    n = m["model"]["num_parameters"]
    s = (m.get("quantization") or {}).get("summary")
    if not s:
        return 4 * n
    return s["quantized_bytes"] + 4 * (n - s["quantized_params"])


def run_one(target: str, name: str, out: Path, heldout_tokens: int) -> dict:
    from slmpack import api
    from slmpack.config import ExportConfig, ValidationConfig
    from slmpack.progress import Progress
    from slmpack.quantize_config import QuantConfig

    kw = CONFIGS[name]
    prog = Progress(enabled=False)
    cfg = ExportConfig(force=True, validation=ValidationConfig(heldout_tokens=heldout_tokens))
    (out / target).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    pkg = api.export(None, target, out / target / name, config=cfg,
                     quant=None if kw is None else QuantConfig(**kw), progress=prog)
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
    }
    if q.get("mixed_precision"):
        mp = q["mixed_precision"]
        row["mixed_precision"] = {"budget_met": mp.get("budget_met"), "units": {u["unit"]: u["scheme"]
                                                                                for u in mp["units"]}}
    return row


def checks(rows: list[dict]) -> list[dict]:
    """The issue's targets, per target: met / not met, with the numbers."""
    out = []
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


def markdown(rows: list[dict], chk: list[dict]) -> str:
    head = ("| target | config | bits/w | artifact MB | × expected | ppl (fp32 → pkg) | Δppl | KL vs fp32 "
            "| top-1 vs fp32 | top-1 vs fake-quant | read-back | export s |\n|" + "---|" * 12)
    lines = [head]
    for r in rows:
        fq = "-" if r["top1_vs_fake_quant"] is None else f"{100 * r['top1_vs_fake_quant']:.2f}%"
        rb = {True: "identical", False: "MISMATCH", None: "-"}[r["readback"]]
        lines.append(f"| {r['target']} | {r['config']} | {r['bits_per_weight']:.2f} | {r['artifact_bytes'] / 1e6:.2f} "
                     f"| {r['size_ratio']:.3f} | {r['ppl_fp32']:.2f} → {r['ppl']:.2f} | {r['ppl_delta_pct']:+.2f}% "
                     f"| {r['kl_vs_fp32']:.4f} | {100 * r['top1_vs_fp32']:.2f}% | {fq} | {rb} | {r['export_s']:.0f} |")
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
    for t in sorted({r["target"] for r in rows}):
        rs = [r for r in rows if r["target"] == t]
        ax.scatter([r["artifact_bytes"] / 1e6 for r in rs], [r["ppl_delta_pct"] for r in rs], label=t)
        seen: dict = {}
        for r in rs:
            key = (round(r["artifact_bytes"] / 1e5), round(r["ppl_delta_pct"], 2))
            seen[key] = seen.get(key, -1) + 1  # stack labels of coinciding points
            ax.annotate(r["config"], (r["artifact_bytes"] / 1e6, r["ppl_delta_pct"]), fontsize=7,
                        xytext=(4, 3 - 9 * seen[key]), textcoords="offset points")
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
    from slmpack.quiet import quiet_third_party

    quiet_third_party()
    targets = args.targets or quant_targets()
    rows, errors = [], []
    for t in targets:
        for c in args.configs:
            try:
                rows.append(run_one(t, c, args.work, args.heldout_tokens))
            except Exception as e:  # keep going: one failing config must not lose the others
                errors.append({"target": t, "config": c, "error": f"{type(e).__name__}: {e}"})
                print(f"{t:10s} {c:16s} FAILED {errors[-1]['error']}", flush=True)
                continue
            r = rows[-1]
            print(f"{t:10s} {c:16s} {r['artifact_bytes'] / 1e6:6.2f} MB  Δppl {r['ppl_delta_pct']:+7.3f}%  "
                  f"top-1 {100 * r['top1_vs_fp32']:6.2f}%  passed {r['passed']}  {r['total_s']:.0f}s", flush=True)
    old_path = args.results / "quality.json"
    if args.merge and old_path.is_file():
        done = {(r["target"], r["config"]) for r in rows}
        old = [r for r in json.loads(old_path.read_text())["rows"] if (r["target"], r["config"]) not in done]
        order = {c: i for i, c in enumerate(CONFIGS)}
        rows = sorted(old + rows, key=lambda r: (r["target"], order.get(r["config"], len(order))))
    chk = checks(rows)
    args.results.mkdir(parents=True, exist_ok=True)
    meta = {"model": "slmpack/demo_model", "heldout_tokens": args.heldout_tokens, "targets": targets,
            "python": platform.python_version(), "cpus": os.cpu_count(),
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()]}
    doc = {"meta": meta, "rows": rows, "checks": chk, "errors": errors}
    (args.results / "quality.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    (args.results / "quality.md").write_text(markdown(rows, chk))
    made = plot(rows, args.results / "quality.png")
    print(markdown(rows, chk))
    print(f"wrote {args.results / 'quality.json'}, quality.md" + (", quality.png" if made else
                                                                     " (no plot: pip install '.[bench]')"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
