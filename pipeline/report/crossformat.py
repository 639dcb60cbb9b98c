"""The cross-format table as people read it: one model in every format and precision, from a benchmark_formats task
(summary.formats) or a measured int8 choice (an artifact's `selection`), for the console (report.table.render, within
the terminal's width, reasons as numbered notes), the run card (Markdown and HTML) and nothing else. Imports no ML
framework.

Columns: candidate (peer defaults marked †) | runtime and precision | status | MB | metric | p50 ms with its 95%
interval | FPS (1000 / p50, batch 1, one stream) | speed-up against the fastest fp32 model with its interval.
"""
from __future__ import annotations

import html as html_mod
from pathlib import Path

from pipeline.report.schema import Summary
from pipeline.report.table import render, wrap_notes

BACKENDS = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO", "executorch": "ExecuTorch", "litert": "LiteRT",
            "coreml": "Core ML"}
SHORT = {**BACKENDS, "onnxruntime": "ORT"}  # the console: 15 table columns for 120 characters
# the console has colour emoji; the card's fonts (DejaVu) draw these instead
SYMBOLS = {"console": {"ran": "✅", "not_runnable": "❎", "failed": "❌"},
           "card": {"ran": "✓ ran", "not_runnable": "– not run", "failed": "✗ failed"}}
TIE = "no measurable difference"


def from_selection(sel: dict, task: str) -> dict:
    """A measured int8 choice's candidates as a cross-format table (the chosen one marked)."""
    rows = [{**r, "status": "ran"} for r in sel.get("candidates") or []]
    rows += [{"status": "not_runnable", **n} for n in sel.get("not_runnable") or []]
    return {"task": task, "title": f"{task}: the measured int8 choice ({sel['chosen']} chosen)",
            "metric": "top-1", "metric_na": None, "reference": sel.get("fastest_fp32"), "rows": rows,
            "cpu": sel.get("cpu"), "threads": sel.get("threads"), "load_average": sel.get("load_average"),
            "chosen": sel.get("chosen")}


def tables(summary: Summary) -> list[dict]:
    """Every cross-format table of a run: benchmark_formats tasks first, then measured choices."""
    out = []
    for doc in summary.formats:
        model = doc.get("model") or {}
        shape = "x".join(str(v) for v in (model.get("input_shape") or [])[1:])
        out.append({**doc, "title": f"{model.get('name', doc['task'])} ({shape}) in every format this host runs",
                    "where": str(Path(summary.run_dir) / "reports" / doc["task"])})
    out += [from_selection(a.selection, a.name) for a in summary.artifacts if a.selection]
    return out


def sig3(v: float) -> str:
    """Three significant digits, trailing zeros kept (1.00, 0.574, 18.7, 151): numbers in a column read alike."""
    return f"{v:#.3g}".rstrip(".")


def _p50(r: dict) -> str:
    if r.get("latency_p50_ms") is None:
        return "-"
    lo, hi = (r.get("latency_p50_ci") or [None, None])[:2]
    return sig3(r["latency_p50_ms"]) + (f" ({sig3(lo)}-{sig3(hi)})" if lo is not None else "")


def _speedup(r: dict) -> str:
    v = r.get("speedup_vs_fastest_fp32")
    if v is None:
        return "-"
    ci = r.get("speedup_vs_fastest_fp32_ci") or [None, None]
    if ci[:2] == [1.0, 1.0]:
        return "1.00x (ref.)"
    return f"{v:.2f}x" + (f" ({ci[0]:.2f}-{ci[1]:.2f})" if ci[0] is not None else "")


def _metric(doc: dict, r: dict) -> str:
    if r.get("status", "ran") != "ran":
        return "-"
    if r.get("accuracy") is None:
        return "n/a" if doc.get("metric_na") else "-"
    return f"{100 * r['accuracy']:.2f}"


def cells(doc: dict, style: str = "console") -> tuple[list[str], list[list[str]], list[str]]:
    """(head, body, notes): reasons as numbered notes shared by the rows that have the same one."""
    sym = SYMBOLS[style]
    head = ["candidate", "runtime", "status", "MB", f"{doc.get('metric', 'top-1')} %", "p50 ms (95% CI)", "FPS",
            "vs fastest fp32"]
    reasons: list[str] = []
    body = []
    for r in doc["rows"]:
        status = r.get("status", "ran")
        word = sym[status]
        if status != "ran":
            reason = r.get("reason") or "not run"
            if reason not in reasons:
                reasons.append(reason)
            word += f" [{reasons.index(reason) + 1}]"
        elif doc.get("chosen") == r["name"]:
            word += " chosen"
        name = r["name"] + ("†" if r.get("peer_default") else "")
        size = f"{r['size_bytes'] / 1e6:.2f}" if r.get("size_bytes") else "-"
        fps = f"{r['fps']:.0f}" if r.get("fps") else ("-" if r.get("latency_p50_ms") is None
                                                       else f"{1000 / r['latency_p50_ms']:.0f}")
        names = SHORT if style == "console" else BACKENDS
        body.append([name, f"{names.get(r['backend'], r['backend'])} {r['precision']}", word, size,
                     _metric(doc, r), _p50(r), fps, _speedup(r)])
    notes = [f"[{i}] {why}" for i, why in enumerate(reasons, start=1)] + doc_notes(doc)
    return head, body, notes


def doc_notes(doc: dict) -> list[str]:
    """Where the numbers come from and what the marks mean."""
    out = []
    if doc.get("metric_na"):
        out.append(f"{doc.get('metric', 'top-1')} n/a: {doc['metric_na']}")
    if any(r.get("peer_default") for r in doc["rows"]):
        out.append("†: peer default, what a user of that back end gets with its documented defaults")
    if doc.get("reference"):
        out.append(f"vs fastest fp32: p50 of {doc['reference']} / this p50, timed side by side (interval from "
                   f"interleaved trials); FPS: 1000 / p50, batch 1, one stream")
    if doc.get("cpu"):
        load = (doc.get("load_average") or {}).get("before") or {}
        out.append(f"measured on this host ({doc['cpu']}), {doc.get('threads')} thread(s), one fresh process, all "
                   f"models round-robin" + (f"; load average {load['1min']:.2f} on {load.get('cpus')} cores before"
                                            if "1min" in load else ""))
    if doc.get("where") and doc.get("files"):
        out.append(f"table: {Path(doc['where']) / doc['files']['csv']} (and {doc['files']['json']})")
    return out


def console(doc: dict, width: int | None = None) -> str:
    head, body, notes = cells(doc, "console")
    return "\n".join([doc["title"], *render(head, body, width, wrap=("candidate", "runtime"), drop_empty=False),
                      *wrap_notes(notes, width)])


def markdown(doc: dict) -> str:
    head, body, notes = cells(doc, "card")
    esc = lambda c: c.replace("|", "\\|")
    lines = [f"### {doc['title']}", "", "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in body]
    return "\n".join(lines + [""] + [f"- {n}" for n in notes]) + "\n"


def html(doc: dict) -> str:
    e = html_mod.escape
    head, body, notes = cells(doc, "card")
    trs = "".join("<tr class='%s'>" % ("bad" if row[2].startswith("✗") else "") + "".join(f"<td>{e(c)}</td>"
                                                                                          for c in row) + "</tr>"
                  for row in body)
    return (f"<h2>{e(doc['title'])}</h2><table class='formats'><thead><tr>"
            + "".join(f"<th>{e(h)}</th>" for h in head) + f"</tr></thead><tbody>{trs}</tbody></table>"
            + "".join(f"<p class='note'>{e(n)}</p>" for n in notes))
