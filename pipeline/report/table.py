"""Text tables: one renderer for every table the tool prints (the run summary, the leaderboard, the plan preview,
the cross-format benchmark), and the run summary's table. Imports no ML framework.

Tables fit the terminal (120 columns when there is none): empty columns are dropped, long cells of the columns
allowed to wrap continue on the next line, and what does not belong in a cell (a failure's reason, where a latency
was measured) is a numbered or plain note under the table.
"""
from __future__ import annotations

import shutil
import sys
import textwrap
import unicodedata

from pipeline.report.schema import FAIL, NA, Summary

WIDTH = 120
RED, GREEN, YELLOW, RESET = "\033[31m", "\033[32m", "\033[33m", "\033[0m"
EMPTY = ("", "-")


def terminal_width() -> int:
    """The terminal's width (at least 80), or WIDTH when the output is not a terminal."""
    if not sys.stdout.isatty():
        return WIDTH
    return max(80, shutil.get_terminal_size((WIDTH, 24)).columns)


def render(head: list[str], body: list[list[str]], width: int | None = None, wrap: tuple[str, ...] = (),
           drop_empty: bool = True, colors: list[str | None] | None = None) -> list[str]:
    """Lay a table out in at most `width` columns: columns whose every cell is empty are dropped (drop_empty), then the
    columns named in `wrap` are narrowed (never below their longest word) and wrapped onto continuation lines until it
    fits. `colors`: an ANSI colour per body row (None: plain)."""
    width = width or terminal_width()
    if drop_empty and body:
        keep = [i for i in range(len(head)) if any(str(b[i]) not in EMPTY for b in body)]
        head, body = [head[i] for i in keep], [[b[i] for i in keep] for b in body]
    cells = [[str(c) for c in r] for r in [head, *body]]
    widths = [max(display_width(c) for c in col) for col in zip(*cells)]
    total = lambda: sum(widths) + 2 * (len(widths) - 1)
    for name in wrap:
        if name in head and total() > width:
            i = head.index(name)
            longest = max(len(w) for c in (r[i] for r in cells) for w in (c.split() or [""]))
            widths[i] = max(longest, widths[i] - (total() - width))
    lines = []
    for k, row in enumerate([cells[0], ["-" * w for w in widths], *cells[1:]]):
        parts = [textwrap.wrap(c, w, break_long_words=False, break_on_hyphens=False) or [""]
                 for c, w in zip(row, widths)]
        color = colors[k - 2] if colors and k >= 2 else None
        for j in range(max(len(p) for p in parts)):
            text = "  ".join(_pad(p[j] if j < len(p) else "", w) for p, w in zip(parts, widths)).rstrip()
            lines.append(f"{color}{text}{RESET}" if color else text)
    return lines


def display_width(text: str) -> int:
    """Columns a terminal gives `text`: wide characters (✅, CJK) take two, combining marks none."""
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _pad(text: str, width: int) -> str:
    return text + " " * max(0, width - display_width(text))


def wrap_notes(notes: list[str], width: int | None = None) -> list[str]:
    width = width or terminal_width()
    return [piece for n in notes for piece in textwrap.wrap(n, width, subsequent_indent="  ", break_long_words=False)]


def _runtime(text: str | None) -> str:
    """`onnxruntime 1.31.1 CPUExecutionProvider` -> `onnxruntime 1.31.1`: the provider is in the latency note."""
    return " ".join((text or "-").split()[:2])


def _speedup(v) -> str:
    if not v.speedup:
        return ""
    return f"{v.speedup:.2f}x" + (" n.s." if v.speed_verdict == "no measurable difference" else "")


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _device_ms(lat: dict | None) -> str:
    """The device's p50, or its mean marked as such when the device's tool measured no percentiles."""
    if not lat:
        return "-"
    if lat.get("p50") is not None:
        return format(lat["p50"], ".3g")
    return f"{lat['mean']:.3g} mean" if lat.get("mean") is not None else "-"


def summary_table(summary: Summary, color: bool | None = None, width: int | None = None) -> str:
    """The run's models, one row each; a model that fails or cannot be judged says why in a numbered note."""
    color = sys.stdout.isatty() if color is None else color
    metric = summary.task.get("metric") or "top-1"
    head = ["stage", "model", "runtime", "MB", f"{metric} %", "p50 ms", "speed-up", "size", "device ms", "est. ms*",
            "verdict"]
    problems: list[str] = []
    body, colors = [], []
    for a in summary.artifacts:
        v = a.verdict
        refs = []
        for p in v.problems:
            problems.append(f"[{len(problems) + 1}] {a.name}: {p}")
            refs.append(str(len(problems)))
        word = {FAIL: "✗ FAIL", NA: "n/a"}.get(v.status, "✓ pass")  # the compare table's words
        body.append([a.name, f"{a.format} {a.precision}", _runtime(a.runtime) if a.latency_ms or a.accuracy is not None
                     else "-", f"{a.size_bytes / 1e6:.2f}", a.metric_text(),
                     _fmt((a.latency_ms or {}).get("p50"), ".3g"), _speedup(v),
                     "" if v.size_ratio is None else f"{v.size_ratio:.2f}x",
                     _device_ms(a.device_latency_ms),
                     _fmt((a.estimate or {}).get("latency_ms"), ".3g"),
                     word + (f" [{','.join(refs)}]" if refs else "")])
        colors.append({FAIL: RED, NA: YELLOW}.get(v.status, GREEN) if color else None)
    w = width or terminal_width()
    lines = render(head, body, w, wrap=("runtime", "stage", f"{metric} %", "model"), colors=colors)
    return "\n".join(lines + wrap_notes(problems + summary_notes(summary), w))


def summary_notes(summary: Summary) -> list[str]:
    """Where each number came from and what the table cannot hold: the measured choice and its losers, the pruning
    pay-off, where latencies were measured, the estimate's provenance, accelerator coverage."""
    arts, metric = summary.artifacts, summary.task.get("metric") or "top-1"
    out = []
    for a in arts:
        sel = a.selection
        if sel:
            losers = [f"{c['name']} ({c['format']}, {c['latency_p50_ms']:.2f} ms, "
                      + (f"{metric} {100 * c['accuracy']:.2f}%: " if c.get("accuracy") is not None else
                         f"output cosine {(c.get('fidelity') or {}).get('cosine') or float('nan'):.4f}: ")
                      + f"{c['lost_because']})" for c in sel["candidates"] if c["kind"] == "int8" and not c["chosen"]]
            out.append(f"{a.name}: measured choice {sel['chosen']} ({sel['speedup_vs_fastest_fp32']:.2f}x the fastest "
                       f"fp32, {sel['fastest_fp32']}); not chosen: {'; '.join(losers) or 'none'}")
    out += [n for a in arts for n in a.notes]
    if any(a.verdict.speed_verdict == "no measurable difference" for a in arts):
        out.append("n.s.: no measurable difference (the speed-up's interval includes 1)")
    out += [f"latency: measured on {m}" for m in sorted({a.measured_on for a in arts if a.measured_on})]
    on_dev = {(o["device"], o["connection"], o["runtime"], o["version"], o["threads"])
              for o in (a.measured_on_device for a in arts) if o}
    out += [f"device ms: measured on {d} ({c}), {rt} {v}, {t} thread(s)" for d, c, rt, v, t in sorted(on_dev)]
    out += [f"* est. ms: {l}" for l in sorted({a.estimate["label"] for a in arts if a.estimate})]
    out += [f"* est. ms: none for {a.name}: {a.no_estimate}" for a in arts if a.no_estimate]
    out += [f"* est. MB {a.name}: {a.estimate['memory']['label']}" for a in arts
            if a.estimate and (a.estimate.get("memory") or {}).get("label")]
    out += [f"coverage {a.name}: {a.coverage}" for a in arts if a.coverage]
    out += [f"{a.name}: not run on this host: {a.not_runnable}" for a in arts if a.not_runnable]
    return out
