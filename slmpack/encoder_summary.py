"""Terminal table for encoder packages: output, cosine / neighbour / label metrics, result."""
from __future__ import annotations


def encoder_rows(pkgs) -> list[dict]:
    out = []
    for p in pkgs:
        enc = p.manifest.get("encoder")
        if enc is None:
            continue
        v = p.validation or {}
        h, vec = v.get("heldout", {}), v.get("vectors", {})
        out.append({"target": p.target, "path": str(p.path), "output": enc["output"],
                    "precision": p.manifest.get("precision", "fp32"),
                    "vectors_max_abs_diff": vec.get("max_abs_diff"), "sentences": h.get("sentences"),
                    "min_cosine": h.get("min_cosine"), "mean_cosine": h.get("mean_cosine"),
                    "top5": h.get("top5_agreement"), "labels": h.get("label_agreement"),
                    "fused": (p.manifest.get("report") or {}).get("summary", ""),
                    "passed": ("PASS" if v.get("passed") else "FAIL") if v else "not run"})
    return out


def encoder_table(console, pkgs) -> None:
    rows = encoder_rows(pkgs)
    if not rows:
        return
    from rich.table import Table

    t = Table(title="slmpack export (encoders)")
    for col in ("target", "package", "output", "precision", "max|Δ| vectors", "sentences", "min cos", "mean cos", "top-5",
                "labels", "result"):
        t.add_column(col)
    fmt = lambda x, f: "-" if x is None else format(x, f)  # noqa: E731
    for r in rows:
        t.add_row(r["target"], r["path"], r["output"], r["precision"], fmt(r["vectors_max_abs_diff"], ".1e"), fmt(r["sentences"], "d"),
                  fmt(r["min_cosine"], ".6f"), fmt(r["mean_cosine"], ".6f"),
                  fmt(None if r["top5"] is None else 100 * r["top5"], ".1f"),
                  fmt(None if r["labels"] is None else 100 * r["labels"], ".1f"), r["passed"])
    console.print(t)
