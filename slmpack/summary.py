"""Terminal summary table of exported packages and their validation."""
from __future__ import annotations

from pathlib import Path


def _size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / (1024 * 1024)


def rows(pkgs) -> list[dict]:
    out = []
    for p in pkgs:
        if "encoder" in p.manifest:  # encoder packages: their own table (encoder_summary)
            continue
        v = p.validation or {}
        h, g, vec = v.get("heldout", {}), v.get("greedy", {}), v.get("vectors", {})
        out.append({
            "target": p.target, "path": str(p.path), "size_mb": round(_size_mb(p.path), 2),
            "context": p.manifest["model"]["max_context"],
            "kv_cache_mb": round(p.manifest["kv_cache"].get("bytes", 0) / (1024 * 1024), 2),
            "max_abs_diff": max(vec.get("prefill_max_abs_diff", 0), vec.get("decode_max_abs_diff", 0)) if vec else None,
            "top1": h.get("top1_agreement"), "mean_kl": h.get("mean_kl"),
            "ppl_ref": h.get("perplexity_reference"), "ppl": h.get("perplexity_artifact"),
            "greedy": (f"{'match' if g.get('match') else 'MISMATCH'} ({g.get('tokens')})" if g else "-"),
            "passed": ("PASS" if v.get("passed") else "FAIL") if v else "not run",
        })
    return out


def export_table(pkgs, errors=()) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="slmpack export")
    for col in ("target", "package", "MB", "context", "KV MB", "max|Δlogit|", "top-1", "KL", "ppl ref→pkg", "greedy", "result"):
        t.add_column(col)
    for r in rows(pkgs):
        fmt = lambda x, f: "-" if x is None else format(x, f)  # noqa: E731
        t.add_row(r["target"], r["path"], f"{r['size_mb']:.2f}", str(r["context"]), f"{r['kv_cache_mb']:.2f}",
                  fmt(r["max_abs_diff"], ".1e"),
                  fmt(None if r["top1"] is None else 100 * r["top1"], ".2f") + ("%" if r["top1"] is not None else ""),
                  fmt(r["mean_kl"], ".2e"),
                  "-" if r["ppl"] is None else f"{r['ppl_ref']:.2f}→{r['ppl']:.2f}", r["greedy"], r["passed"])
    for target, e in errors:
        t.add_row(target, "-", "-", "-", "-", "-", "-", "-", "-", "-", f"error[{e.code}]")
    from slmpack.quiet import stderr, stdout

    console = Console(file=stdout())
    if not console.is_terminal:
        console = Console(file=stdout(), width=160)
    if t.row_count:
        console.print(t)
    from slmpack.quant_summary import quant_table

    quant_table(console, pkgs)  # quantized packages: fake-quant agreement + fp32 deltas
    from slmpack.encoder_summary import encoder_table

    encoder_table(console, pkgs)
    for p in pkgs:  # one line a target may add about its artifact (e.g. ExecuTorch delegation)
        line = (p.manifest.get("report") or {}).get("summary")
        if line:
            console.print(f"{p.target}: {line}", highlight=False, soft_wrap=True)  # one line, never wrapped
    for target, e in errors:
        Console(file=stderr(), highlight=False).print(f"[red]{target}[/red]: error[{e.code}]: {e}",
                                                         soft_wrap=True)
