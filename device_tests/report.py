"""Device-test reports: report.json (everything), report.md (a decoder table and an encoder table,
each only when it has rows, then the package × device matrix of matrix.py), report.html (the tables,
the matrix with its log-scale chart of max |Δ|, inline SVG bar charts of decode tok/s and peak
memory per package × device). Deterministic: rows in run order, keys sorted, no timestamps or
absolute paths beyond what results carry."""
from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path

from . import matrix

COLUMNS = ("package", "device", "transport", "status", "greedy", "prefill Δ", "decode Δ", "TTFT ms",
           "prefill tok/s", "decode tok/s", "peak RSS MB", "fit MB (need/avail)", "tok/s bound", "note")


def _num(value, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and (abs(value) < 1e-2 and value != 0):
        return f"{value:.1e}"
    return f"{value:,.{digits}f}" if isinstance(value, float) else str(value)


ENCODER_COLUMNS = ("package", "device", "transport", "status", "output", "vectors", "max |Δ|", "bound",
                   "min cosine", "label agreement", "load ms", "run ms", "rows/s", "peak RSS MB",
                   "fit MB (need/avail)", "note")


def _fit_cell(fit: dict) -> str:
    return f"{fit['needed_mb']:.0f}/{fit['available_mb']}" if fit else "–"


def _encoder_row(r) -> list[str]:
    d, fit = r.device_json or {}, r.fit or {}
    vec = d.get("vectors") or {}
    shape = f"{vec['rows']}x{vec['width']}" if "rows" in vec else "–"
    return [r.package, r.device, r.transport, r.status, str(d.get("output") or "–"), shape,
            _num(vec.get("max_abs_diff")), _num(vec.get("bound")), _num(vec.get("min_cosine"), 6),
            _num(vec.get("label_agreement"), 3), _num(d.get("load_ms")), _num(d.get("run_ms")),
            _num(d.get("rows_per_s"), 2), _num(d.get("peak_rss_mb")), _fit_cell(fit), r.reason]


def _tables(results) -> list[tuple[tuple[str, ...], list[list[str]], list]]:
    """(columns, rows, results) per package kind present, decoders first."""
    dec = [r for r in results if getattr(r, "kind", "decoder") != "encoder"]
    enc = [r for r in results if getattr(r, "kind", "decoder") == "encoder"]
    out = []
    if dec or not enc:
        out.append((COLUMNS, [_row(r) for r in dec], dec))
    if enc:
        out.append((ENCODER_COLUMNS, [_encoder_row(r) for r in enc], enc))
    return out


def _row(r) -> list[str]:
    d, fit = r.device_json or {}, r.fit or {}
    return [r.package, r.device, r.transport, r.status, matrix.greedy_text(r), _num(d.get("prefill_max_abs_diff")),
            _num(d.get("decode_max_abs_diff")), _num(d.get("ttft_ms")), _num(d.get("prefill_tok_s")),
            _num(d.get("decode_tok_s")), _num(d.get("peak_rss_mb")),
            _fit_cell(fit), _num(fit.get("decode_tok_s_upper")) if fit else "–", r.reason]


@dataclass
class Report:
    results: list

    @property
    def ok(self) -> bool:
        """No pair failed or errored (skipped pairs are reported, not failures)."""
        return all(r.status in ("passed", "skipped") for r in self.results)

    def counts(self) -> dict:
        out = {"passed": 0, "failed": 0, "skipped": 0, "error": 0}
        for r in self.results:
            out[r.status] += 1
        return out

    def to_json(self) -> dict:
        return {"schema_version": 1, "ok": self.ok, "counts": self.counts(),
                "results": [r.to_json() for r in self.results], "matrix": matrix.to_json(self.results)}

    def to_markdown(self) -> str:
        esc = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
        tables = []
        for columns, rows, _ in _tables(self.results):
            lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            tables.append("\n".join(lines + ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]))
        c = self.counts()
        summary = f"**{'OK' if self.ok else 'FAILED'}**: {c['passed']} passed, {c['failed']} failed, " \
                  f"{c['skipped']} skipped, {c['error']} error"
        grid = matrix.markdown(self.results)
        return "# Device test report\n\n" + summary + "\n\n" + "\n\n".join(tables) + "\n" + \
            ("\n" + grid if grid else "")

    def to_html(self) -> str:
        tables = "".join(
            "<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in columns) + "</tr>"
            + "".join("<tr class='%s'>" % r.status + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                      for r, row in zip(results, rows)) + "</table>"
            for columns, rows, results in _tables(self.results))
        charts = "".join(_bar_chart(title, [(f"{r.device} / {r.package}", (r.device_json or {}).get(key))
                                            for r in self.results], unit)
                         for title, key, unit in (("Decode throughput", "decode_tok_s", "tok/s"),
                                                  ("Peak memory (RSS)", "peak_rss_mb", "MB")))
        style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
                 "td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px}"
                 "tr.passed td:nth-child(4){color:#176f2c}tr.failed td:nth-child(4),"
                 "tr.error td:nth-child(4){color:#b00020;font-weight:bold}"
                 "table.matrix td.passed{background:#eaf5ec}table.matrix td.failed,"
                 "table.matrix td.error{background:#fbe9eb}")
        return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>slmpack device tests</title>"
                f"<style>{style}</style></head><body><h1>Device test report</h1>"
                f"<p>{html.escape(json.dumps(self.counts()))}</p>{tables}"
                f"{matrix.html_section(self.results)}{charts}</body></html>\n")

    def write(self, out_dir) -> dict:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"json": out / "report.json", "markdown": out / "report.md", "html": out / "report.html"}
        paths["json"].write_text(json.dumps(self.to_json(), indent=1, sort_keys=True) + "\n")
        paths["markdown"].write_text(self.to_markdown())
        paths["html"].write_text(self.to_html())
        return {k: str(v) for k, v in paths.items()}


def _bar_chart(title: str, items: list, unit: str) -> str:
    items = [(label, float(v)) for label, v in items if isinstance(v, (int, float))]
    if not items:
        return ""
    top = max(v for _, v in items) or 1.0
    row, label_w, bar_w = 22, 260, 360
    height = row * len(items) + 30
    parts = [f"<h2>{html.escape(title)}</h2>",
             f"<svg xmlns='http://www.w3.org/2000/svg' width='{label_w + bar_w + 120}' height='{height}' "
             f"role='img' aria-label='{html.escape(title)}'>"]
    for i, (label, value) in enumerate(items):
        y, w = 10 + i * row, max(1.0, bar_w * value / top)
        parts.append(f"<text x='{label_w - 6}' y='{y + 14}' text-anchor='end' font-size='12'>"
                     f"{html.escape(label)}</text><rect x='{label_w}' y='{y}' width='{w:.1f}' height='{row - 6}' "
                     f"fill='#3b6ea5'/><text x='{label_w + w + 6:.1f}' y='{y + 14}' font-size='12'>"
                     f"{value:,.1f} {html.escape(unit)}</text>")
    parts.append("</svg>")
    return "".join(parts)
