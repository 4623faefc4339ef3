"""Terminal table for quantized packages: plan size, agreement with the plan's fake-quant
reference (pass/fail) and the cost of quantization vs fp32 (reported)."""
from __future__ import annotations

from pathlib import Path


def artifact_mb(pkg) -> float:
    files = [f for f in (pkg.manifest.get("files") or {}) if not f.startswith(("quant_plan", "test_vectors"))
             and not f.startswith(("tokenizer", "generation_config", "genai_config", "quant_recipe"))]
    return sum((Path(pkg.path) / f).stat().st_size for f in files if (Path(pkg.path) / f).is_file()) / 1e6


def quant_rows(pkgs) -> list[dict]:
    out = []
    for p in pkgs:
        q = p.manifest.get("quantization") or {}
        if not q.get("plan"):
            continue
        v = p.validation or {}
        fq, fp = v.get("heldout", {}), v.get("heldout_fp32", {})
        s = q.get("summary", {})
        out.append({"target": p.target, "recipe": q.get("recipe"), "precision": p.manifest.get("precision"),
                    "bits_per_weight": s.get("bits_per_weight"), "artifact_mb": round(artifact_mb(p), 3),
                    "fq_top1": fq.get("top1_agreement"), "fq_kl": fq.get("mean_kl"),
                    "fp32_top1": fp.get("top1_agreement"), "fp32_kl": fp.get("mean_kl"),
                    "fp32_ppl_delta_pct": fp.get("perplexity_delta_pct"),
                    "readback": q.get("readback_passed"),
                    "passed": ("PASS" if v.get("passed") else "FAIL") if v else "not run"})
    return out


def quant_table(console, pkgs) -> None:
    rows = quant_rows(pkgs)
    if not rows:
        return
    from rich.table import Table

    t = Table(title="quantization (pass/fail vs the plan's fake-quant reference; fp32 deltas reported)")
    for col in ("target", "recipe", "bits/w", "artifact MB", "top-1 vs fq", "KL vs fq", "top-1 vs fp32",
                "KL vs fp32", "Δppl vs fp32", "read-back", "result"):
        t.add_column(col)
    f = lambda x, spec, scale=1.0, suffix="": "-" if x is None else format(scale * x, spec) + suffix  # noqa: E731
    for r in rows:
        t.add_row(r["target"], str(r["recipe"]), f(r["bits_per_weight"], ".2f"), f"{r['artifact_mb']:.2f}",
                  f(r["fq_top1"], ".2f", 100, "%"), f(r["fq_kl"], ".1e"), f(r["fp32_top1"], ".2f", 100, "%"),
                  f(r["fp32_kl"], ".1e"), f(r["fp32_ppl_delta_pct"], "+.2f", 1, "%"),
                  {True: "identical", False: "MISMATCH", None: "-"}[r["readback"]], r["passed"])
    console.print(t)
