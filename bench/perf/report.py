"""Derived numbers (ratios, roofline, memory) and the Markdown table of a benchmark run."""
from __future__ import annotations

import os
import platform

MB = 1 << 20
EAGER, OURS = "pytorch-eager", "slmpack-onnx"

PEER_OF = {"8da8w": "llama.cpp Q8_0", "int8": "llama.cpp Q8_0", "8da4w": "llama.cpp Q4_0", "int4": "llama.cpp Q4_0"}


def machine() -> dict:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(),
            "loadavg_at_start": [round(x, 2) for x in load] if load else None}


def kv_bytes(facts: dict, tokens: float, elem: int = 4) -> float:
    return 2 * facts["layers"] * facts["kv_heads"] * facts["head_dim"] * tokens * elem


def _weights_read(variant: str, facts: dict, row: dict) -> float:
    """Bytes of weights read per decoded token: fp32 params for float runtimes (tied embeddings
    counted once: the lm_head reads the whole table), the file size for GGUF quantizations."""
    if (variant.startswith("llama.cpp") or row.get("quant")) and row.get("artifact_bytes"):
        return float(row["artifact_bytes"])   # quantized: the packed weights (+ scales) are what is read
    return facts["params"] * 4.0


def summarize(res: dict) -> dict:
    out: dict = {"models": {}, "targets": []}
    base = (res.get("export_import_baseline") or {}).get("peak_rss_mb")
    for name, m in res["models"].items():
        facts = m["facts"]
        per = {}
        for run in m["throughput"]:
            t, rows = run["threads"], run["variants"]
            eager = rows.get(EAGER, {})
            # median read bandwidth, like the median tok/s it is compared with (best sample shown too)
            bw = run["bandwidth_gb_s"]["read"] * 1e9
            ctx_mean = run["prompt"] + run["decode"] / 2
            table = {}
            for variant, row in rows.items():
                if "decode_tok_s" not in row:
                    table[variant] = {"error": row.get("error")}
                    continue
                kv_elem = 2 if variant.startswith("llama.cpp") else 4  # llama.cpp caches K/V in f16
                per_token = _weights_read(variant, facts, row) + kv_bytes(facts, ctx_mean, kv_elem)
                mem = row.get("memory", {})
                runtime_mb = (mem.get("vmhwm_kb", 0) - mem.get("rss_before_load_kb", 0)) / 1024
                probe = row.get("probe_memory") or {}
                probe_mb = ((probe["vmhwm_kb"] - probe["rss_before_load_kb"]) / 1024) if "vmhwm_kb" in probe else None
                art = row.get("artifact_bytes")
                kv_max = kv_bytes(facts, run["prompt"] + run["decode"], kv_elem)
                table[variant] = {
                    "prefill_tok_s": round(row["prefill_tok_s"], 1), "decode_tok_s": round(row["decode_tok_s"], 2),
                    "prefill_vs_eager": _ratio(row["prefill_tok_s"], eager.get("prefill_tok_s")),
                    "decode_vs_eager": _ratio(row["decode_tok_s"], eager.get("decode_tok_s")),
                    "decode_roofline": round(per_token * row["decode_tok_s"] / bw, 3),
                    "bytes_per_token_mb": round(per_token / MB, 2),
                    "peak_rss_mb": round(mem.get("vmhwm_kb", 0) / 1024, 1),
                    "runtime_rss_mb": round(runtime_mb, 1),
                    "rss_vs_artifact_kv_in_worker": (round(runtime_mb * MB / (art + kv_max), 3) if art else None),
                    "runtime_only_peak_rss_mb": round(probe["vmhwm_kb"] / 1024, 1) if probe_mb else None,
                    "runtime_only_rss_delta_mb": round(probe_mb, 1) if probe_mb else None,
                    "rss_vs_artifact_kv": (round(probe_mb * MB / (art + kv_max), 3) if art and probe_mb else None),
                    "artifact_mb": round(art / MB, 2) if art else None,
                }
            for mine in [v for v in table if v.startswith(OURS)]:
                ours = table[mine]
                for peer in [v for v in table if v != EAGER and not v.startswith(OURS)]:
                    if "decode_tok_s" in table[peer] and "decode_tok_s" in ours:
                        ours.setdefault("decode_vs", {})[peer] = _ratio(ours["decode_tok_s"],
                                                                        table[peer]["decode_tok_s"])
                if rows.get(mine, {}).get("quant"):
                    ours["quant"] = rows[mine]["quant"]
            per[t] = {"bandwidth_read_gb_s": round(run["bandwidth_gb_s"]["read"], 2),
                      "bandwidth_read_best_gb_s": round(max(run["bandwidth_samples"]["read"]), 2),
                      "bandwidth_copy_gb_s": round(run["bandwidth_gb_s"]["copy"], 2), "variants": table}
        pkg = m["packages"].get("onnx", {})
        weights_mb = facts["params"] * 4 / MB
        out["models"][name] = {
            "throughput": per,
            "artifact_mb": round(pkg.get("artifact_bytes", 0) / MB, 2),
            "theoretical_fp32_mb": round(weights_mb, 2),
            "artifact_vs_theoretical": _ratio(pkg.get("artifact_bytes", 0) / MB, weights_mb),
            "export_s": pkg.get("seconds"), "export_peak_rss_mb": pkg.get("peak_rss_mb"),
            "export_rss_vs_weights": _ratio(pkg.get("peak_rss_mb"), weights_mb),
            "export_rss_above_imports_vs_weights": _ratio(max(0.0, pkg["peak_rss_mb"] - base), weights_mb)
            if pkg.get("peak_rss_mb") and base else None,
            "fusions": pkg.get("fusions"), "attention_blocks_fused": pkg.get("attention_blocks_fused"),
            "validation": pkg.get("validation"),
        }
    scaling = res.get("export_scaling") or []
    for prev, cur in zip(scaling, scaling[1:]):
        cur["time_vs_previous"] = _ratio(cur.get("seconds"), prev.get("seconds"))
        cur["rss_vs_previous"] = _ratio(cur.get("peak_rss_mb"), prev.get("peak_rss_mb"))
    for row in scaling:
        row["rss_vs_weights"] = _ratio(row.get("peak_rss_mb"), row["params"] * 4 / MB)
        if base and row.get("peak_rss_mb"):
            row["rss_above_imports_vs_weights"] = _ratio(row["peak_rss_mb"] - base, row["params"] * 4 / MB)
    if len(scaling) > 1:  # RSS added per byte of fp32 weights added: how many copies of a weight the export holds
        a, b = scaling[0], scaling[-1]
        out["export_marginal_rss_per_weight_byte"] = _ratio(b["peak_rss_mb"] - a["peak_rss_mb"],
                                                            (b["params"] - a["params"]) * 4 / MB)
    out["targets"] = _targets(out, scaling)
    return out


def _quant_targets(name: str, t: int, variants: dict) -> list[dict]:
    """int8 decode >= 2.5x eager; quantized decode >= 65% of bandwidth; >= llama.cpp at the same bits."""

    rows = []
    for v, row in variants.items():
        q = row.get("quant")
        if not q or "decode_tok_s" not in row:
            continue
        if q in ("int8", "8da8w"):
            rows.append({"what": f"{name} {t}T: {v} decode vs eager", "need": ">= 2.5", "got": row["decode_vs_eager"],
                         "met": _ge(row["decode_vs_eager"], 2.5)})
        rows.append({"what": f"{name} {t}T: {v} decode roofline", "need": ">= 0.65", "got": row["decode_roofline"],
                     "met": _ge(row["decode_roofline"], 0.65)})
        peer = PEER_OF.get(q)
        got = (row.get("decode_vs") or {}).get(peer)
        if got is not None:
            rows.append({"what": f"{name} {t}T: {v} decode vs {peer}", "need": ">= 1.0", "got": got,
                         "met": _ge(got, 1.0)})
    return rows


def _targets(s: dict, scaling: list) -> list[dict]:
    rows = []
    for name, m in s["models"].items():
        for t, run in m["throughput"].items():
            ours = run["variants"].get(OURS, {})
            if "decode_tok_s" not in ours:
                continue
            rows += [
                {"what": f"{name} {t}T: ORT prefill vs eager", "need": ">= 1.5", "got": ours["prefill_vs_eager"],
                 "met": _ge(ours["prefill_vs_eager"], 1.5)},
                {"what": f"{name} {t}T: ORT decode vs eager", "need": ">= 1.3", "got": ours["decode_vs_eager"],
                 "met": _ge(ours["decode_vs_eager"], 1.3)},
                {"what": f"{name} {t}T: ORT decode roofline", "need": "report", "got": ours["decode_roofline"],
                 "met": None},
                {"what": f"{name} {t}T: ORT runtime RSS / (artifact + KV)", "need": "<= 1.25",
                 "got": ours["rss_vs_artifact_kv"], "met": _le(ours["rss_vs_artifact_kv"], 1.25)},
            ]
        for t, run in m["throughput"].items():
            rows += _quant_targets(name, t, run["variants"])
        rows.append({"what": f"{name}: export peak RSS / fp32 weights", "need": "<= 1.5",
                     "got": m["export_rss_vs_weights"], "met": _le(m["export_rss_vs_weights"], 1.5)})
        rows.append({"what": f"{name}: (export peak RSS − import baseline) / fp32 weights", "need": "(diagnostic)",
                     "got": m.get("export_rss_above_imports_vs_weights"), "met": None})
        fused = m.get("attention_blocks_fused") or "0/1"
        a, b = (int(x) for x in fused.split("/"))
        rows.append({"what": f"{name}: attention blocks fused", "need": ">= 95%", "got": fused, "met": a >= 0.95 * b})
    if len(scaling) > 1:
        r = scaling[1].get("time_vs_previous")
        rows.append({"what": f"export time {scaling[1]['layers']}L/{scaling[0]['layers']}L", "need": "<= 2.2",
                     "got": r, "met": _le(r, 2.2)})
    return rows


def _ratio(a, b):
    return round(a / b, 3) if a is not None and b else None


def _ge(x, y):
    return None if x is None else x >= y


def _le(x, y):
    return None if x is None else x <= y


def markdown(res: dict) -> str:
    s = res["summary"]
    mach = res["machine"]
    lines = [f"# slmpack performance — {res['date']}", "",
             f"{mach['cpu']} ({mach['cores']} cores; load average at start {mach['loadavg_at_start']}). "
             f"Every variant in its own process, threads pinned, {res['models'] and next(iter(res['models'].values()))['throughput'][0]['reps']} "
             "interleaved repetitions, medians. Prefill: 128-token prompt; decode: tokens after it.", ""]
    for name, m in s["models"].items():
        facts = res["models"][name]["facts"]
        lines += [f"## {name} ({facts['params'] / 1e6:.1f}M params, {facts['layers']} layers, "
                  f"{facts['heads']}/{facts['kv_heads']} heads)", ""]
        for t, run in m["throughput"].items():
            lines += [f"**{t} thread(s)** — memory bandwidth (numpy, median read / copy): {run['bandwidth_read_gb_s']} / "
                      f"{run['bandwidth_copy_gb_s']} GB/s (best read sample {run['bandwidth_read_best_gb_s']} GB/s); "
                      "decode roofline = (weight + KV bytes per token) × tok/s ÷ median read bandwidth", "",
                      "| variant | prefill tok/s | decode tok/s | prefill × eager | decode × eager | decode roofline | "
                      "runtime-only peak RSS MB (Δ load+run) | Δ / (artifact+KV) |",
                      "|---|---:|---:|---:|---:|---:|---:|---:|"]
            order = sorted(run["variants"], key=lambda v: (v != EAGER, not v.startswith("slmpack"), v))
            for variant in order:
                r = run["variants"][variant]
                if "error" in r:
                    lines.append(f"| {variant} | error | | | | | | |")
                    continue
                lines.append(f"| {variant} | {r['prefill_tok_s']} | {r['decode_tok_s']} | {r['prefill_vs_eager']} | "
                             f"{r['decode_vs_eager']} | {r['decode_roofline']:.1%} | {r['runtime_only_peak_rss_mb'] or r['peak_rss_mb']} "
                             f"({r['runtime_only_rss_delta_mb'] or r['runtime_rss_mb']}) | {r['rss_vs_artifact_kv']} |")
            mine = [v for v in order if v.startswith(OURS) and run["variants"][v].get("decode_vs")]
            if mine:
                lines += ["", "slmpack decode speed ÷ peer:", ""]
                lines += [f"- {v}: " + ", ".join(f"{k} {x}×" for k, x in run["variants"][v]["decode_vs"].items())
                          for v in mine]
            lines.append("")
        lines += [f"Artifact {m['artifact_mb']} MB vs fp32 weights {m['theoretical_fp32_mb']} MB "
                  f"(×{m['artifact_vs_theoretical']}); export {m['export_s']} s, peak RSS {m['export_peak_rss_mb']} MB "
                  f"(×{m['export_rss_vs_weights']} fp32 weights, with validation; ×{m['export_rss_above_imports_vs_weights']} "
                  f"above the {res.get('export_import_baseline', {}).get('peak_rss_mb')} MB import baseline); fusions {m['fusions']}; "
                  f"attention blocks fused {m['attention_blocks_fused']}; ladder {m['validation']}.", ""]
        for pname, p in (res["models"][name].get("peers") or {}).items():
            if not p.get("ok"):
                lines.append(f"- peer {pname}: not built — {str(p.get('error'))[:300]}")
        lines.append("")
    if res.get("export_scaling"):
        lines += ["## Export time and peak RSS vs depth (SmolLM-135M shape, `--no-validate`, one process each)", "",
                  "| layers | params (M) | export s | × previous | peak RSS MB | × previous | RSS / fp32 weights | "
                  "(RSS − import baseline) / fp32 weights |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in res["export_scaling"]:
            lines.append(f"| {r['layers']} | {r['params'] / 1e6:.1f} | {r['seconds']} | {r.get('time_vs_previous', '')} | "
                         f"{r['peak_rss_mb']} | {r.get('rss_vs_previous', '')} | {r.get('rss_vs_weights')} | "
                         f"{r.get('rss_above_imports_vs_weights')} |")
        lines += ["", f"Marginal export RSS per byte of fp32 weights added (first to last depth): "
                      f"{s.get('export_marginal_rss_per_weight_byte')} (the number of live copies of a weight at peak).", ""]
    lines += ["## Targets", "", "| target | required | measured | met |", "|---|---|---|---|"]
    for t in s["targets"]:
        met = {True: "yes", False: "**no**", None: "—"}[t["met"]]
        lines.append(f"| {t['what']} | {t['need']} | {t['got']} | {met} |")
    return "\n".join(lines) + "\n"
