"""The matrix view of a device-test run: one cell per package × device with its verdict, max |Δ|
against the host's reference and the declared bound that judged it (atol + rtol·|reference|),
top-1 (or label) agreement, greedy against the host, peak RSS net of the emulator's own baseline and the fit estimate beside it.

Written into report.json (``matrix``), report.md and report.html (a grid and a log-scale chart of
max |Δ| per cell with its atol). Emulated timings mean nothing: a run with a qemu cell says so.
"""
from __future__ import annotations

import html
import math
from dataclasses import asdict, dataclass

EMULATED_NOTE = ("Emulated (qemu-user) cells: the numerics are the ARM kernels' own, but timings mean "
                 "nothing (each instruction is translated on an x86 host) and peak RSS includes the "
                 "emulator; net RSS subtracts an idle Python under the same qemu and CPU model.")


@dataclass(frozen=True)
class Cell:
    package: str
    device: str
    status: str
    max_abs_diff: float | None     # decoders: max of prefill and decode; encoders: the vector batch's
    atol: float | None             # the declared tolerance the cell was judged by:
    rtol: float | None             #   |Δ| ≤ atol + rtol·|reference| per value
    agreement: float | None        # decoders: min top-1 agreement; encoders: label agreement or min cosine
    greedy: str                    # match | DIFFERS | from token N (lossy) | –
    peak_rss_mb: float | None
    rss_baseline_mb: float | None  # the emulator's idle-Python peak (None on a real device)
    net_rss_mb: float | None
    fit_needed_mb: float | None
    emulated: bool


def greedy_text(r) -> str:
    """Judged (the target declares the package exact) or recorded (lossy) greedy vs the host."""
    if "greedy_match" in r.checks:
        return "match" if r.checks["greedy_match"] else "DIFFERS"
    g = (r.device_json or {}).get("host_greedy") or {}
    if g:
        return "match" if g.get("match") else f"from token {g.get('first_divergence')} (lossy)"
    return "–"


def _min(*values):
    vals = [float(v) for v in values if isinstance(v, (int, float))]
    return min(vals) if vals else None


def cell(r) -> Cell:
    doc = r.device_json or {}
    if r.kind == "encoder":   # PackageKind is a str enum
        vec = doc.get("vectors") or {}
        diff, atol, rtol = vec.get("max_abs_diff"), vec.get("bound"), 0.0   # the encoder bound is absolute
        agreement = vec.get("label_agreement") if vec.get("label_agreement") is not None else vec.get("min_cosine")
        greedy = "–"
    else:
        pre, dec = doc.get("prefill_max_abs_diff"), doc.get("decode_max_abs_diff")
        diff = max((v for v in (pre, dec) if isinstance(v, (int, float))), default=None)
        tol = doc.get("tolerance") or {}
        atol, rtol = tol.get("atol"), tol.get("rtol")
        agreement = _min(doc.get("prefill_top1_agreement"), doc.get("decode_top1_agreement"))
        greedy = greedy_text(r)
    peak, base = doc.get("peak_rss_mb"), (r.transport_info or {}).get("rss_baseline_mb")
    net = round(peak - base, 1) if isinstance(peak, (int, float)) and isinstance(base, (int, float)) else None
    return Cell(r.package, r.device, r.status, diff, atol, rtol, agreement, greedy, peak, base, net,
                (r.fit or {}).get("needed_mb"), r.transport == "qemu")


def cells(results) -> list[Cell]:
    return [cell(r) for r in results]


def to_json(results) -> list[dict]:
    return [asdict(c) for c in cells(results)]


def _grid(results) -> tuple[list[str], list[str], dict[tuple[str, str], Cell]]:
    """Rows, columns and cells. The harness runs every package on each device in order, so the i-th
    result of a device is package i: two packages of one name (copies in two folders) stay two rows."""
    devices: list[str] = []
    per_device: dict[str, list[Cell]] = {}
    for c in cells(results):
        devices += [c.device] if c.device not in devices else []
        per_device.setdefault(c.device, []).append(c)
    names = [c.package for c in max(per_device.values(), key=len)] if per_device else []
    rows = [n if names.count(n) == 1 else f"{n} ({names[:i + 1].count(n)})" for i, n in enumerate(names)]
    grid = {(rows[i], d): c for d, cs in per_device.items() for i, c in enumerate(cs)}
    return rows, devices, grid


def _num(v, fmt: str) -> str:
    return "–" if v is None else format(v, fmt)


def _text(c: Cell) -> list[str]:
    mem = _num(c.net_rss_mb if c.net_rss_mb is not None else c.peak_rss_mb, ".0f")
    bound = _num(c.atol, ".0e") + (f" + {c.rtol:.0e}·|ref|" if c.rtol else "")
    return [c.status.upper(), f"Δ {_num(c.max_abs_diff, '.1e')} (bound {bound})",
            f"agree {_num(c.agreement, '.3f')}", f"greedy {c.greedy}",
            f"{'net ' if c.net_rss_mb is not None else ''}RSS {mem} MB (fit {_num(c.fit_needed_mb, '.0f')})"]


def markdown(results) -> str:
    packages, devices, grid = _grid(results)
    if len(packages) * len(devices) < 2:
        return ""
    lines = ["## Matrix", "", "| package | " + " | ".join(devices) + " |", "|---|" + "---|" * len(devices)]
    for p in packages:
        row = [" · ".join(_text(grid[p, d])) if (p, d) in grid else "–" for d in devices]
        lines.append(f"| {p} | " + " | ".join(row) + " |")
    if any(c.emulated for c in grid.values()):
        lines += ["", EMULATED_NOTE]
    return "\n".join(lines) + "\n"


def html_section(results) -> str:
    packages, devices, grid = _grid(results)
    if len(packages) * len(devices) < 2:
        return ""
    all_cells = list(grid.values())
    head = "<tr><th>package</th>" + "".join(f"<th>{html.escape(d)}</th>" for d in devices) + "</tr>"
    body = ""
    for p in packages:
        body += f"<tr><th>{html.escape(p)}</th>"
        for d in devices:
            c = grid.get((p, d))
            body += ("<td>–</td>" if c is None else f"<td class='{c.status}'>"
                     + "<br>".join(html.escape(t) for t in _text(c)) + "</td>")
        body += "</tr>"
    note = f"<p>{html.escape(EMULATED_NOTE)}</p>" if any(c.emulated for c in all_cells) else ""
    return f"<h2>Matrix</h2><table class='matrix'>{head}{body}</table>{note}{_diff_chart(all_cells)}"


def _diff_chart(all_cells: list[Cell]) -> str:
    """Horizontal bars of max |Δ| per cell on a log scale (1e-8 … 1), a tick at the cell's atol."""
    items = [c for c in all_cells if c.max_abs_diff is not None]
    if not items:
        return ""
    lo, hi, row, label_w, bar_w = -8.0, 0.0, 22, 300, 360

    def x(v: float) -> float:
        return label_w + bar_w * (min(max(math.log10(max(v, 1e-12)), lo), hi) - lo) / (hi - lo)

    parts = ["<h2>max |Δ| per cell (log scale; black tick: the declared atol, to which the bound adds "
             "rtol·|reference| per value)</h2>",
             f"<svg xmlns='http://www.w3.org/2000/svg' width='{label_w + bar_w + 140}' "
             f"height='{row * len(items) + 30}' role='img' aria-label='max abs diff per cell'>"]
    for i, c in enumerate(items):
        y = 10 + i * row
        colour = "#3b6ea5" if c.status == "passed" else "#b00020"
        parts.append(f"<text x='{label_w - 6}' y='{y + 14}' text-anchor='end' font-size='12'>"
                     f"{html.escape(c.device + ' / ' + c.package)}</text>"
                     f"<rect x='{label_w}' y='{y}' width='{max(1.0, x(c.max_abs_diff) - label_w):.1f}' "
                     f"height='{row - 6}' fill='{colour}'/>"
                     f"<text x='{label_w + bar_w + 6}' y='{y + 14}' font-size='12'>{c.max_abs_diff:.1e}</text>")
        if c.atol:
            parts.append(f"<rect x='{x(c.atol) - 1:.1f}' y='{y - 2}' width='2' height='{row - 2}' fill='#000'/>")
    parts.append("</svg>")
    return "".join(parts)
