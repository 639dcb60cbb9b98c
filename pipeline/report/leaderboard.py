"""The leaderboard of compared runs as people read it: a console table within the terminal's width (ties and
problems as notes), the accuracy-vs-latency plot with its Pareto front (PNG), and a self-contained sortable HTML page.
Pure functions over leaderboard rows (pipeline.tracking.compare.load_rows); matplotlib imported lazily."""
from __future__ import annotations

import base64
import html as html_mod
from pathlib import Path
from typing import Any

from pipeline.library import stats
from pipeline.report import objective
from pipeline.report.table import render, wrap_notes

UI = "http://127.0.0.1:5000"  # `make ui`; compare ui=URL for another MLflow UI


def latency_ci(r: dict) -> tuple[float, float] | None:
    ci = r.get("latency_p50_ci")
    return (float(ci[0]), float(ci[1])) if ci and None not in ci[:2] else None


# --- console table --------------------------------------------------------------------------------------------------
HEAD = ["#", "job", "device", "stage", "model", "MB", "top-1 %", "p50 ms (95% CI)", "speed-up", "status", "registry"]
WIDTH = 120


def status_text(r: dict) -> str:
    """Plain words beside the symbol, so a missing glyph loses nothing."""
    if r.get("not_runnable"):
        return "- not run here"
    if r["verdict"] == "n/a":
        return "n/a: " + "; ".join(r["problems"])
    return "✓ pass" if r["ok"] else "✗ FAIL: " + "; ".join(r["problems"])


def p50_text(r: dict, tie: bool = True) -> str:
    if r["latency_p50_ms"] is None:
        return "-"
    ci = latency_ci(r)
    text = f"{r['latency_p50_ms']:.3g}" + (f" ({ci[0]:.3g}-{ci[1]:.3g})" if ci else " (no CI)")
    return text + (f" {r['tie']}" if tie and r.get("tie") else "")


def speedup_text(r: dict) -> str:
    if not r["speedup"]:
        return ""
    ci = r.get("speedup_ci")
    if ci and None not in ci[:2]:
        v = stats.verdict_from_ratio(float(ci[0]), float(ci[1]))
        return f"{r['speedup']:.2f}x" + ("" if v != stats.TIE else " n.s.")
    return f"{r['speedup']:.2f}x"


def cells(r: dict, status: str | None = None) -> list[str]:
    return [str(r["rank"]), r["overrides"] or r["run"] or r["run_id"][:8], r["device"], r["artifact"],
            f"{r['format']} {r['precision']}", _f(r["size_mb"], ".2f"),
            "n/a" if r["accuracy"] is None and r.get("accuracy_na") else
            _f(None if r["accuracy"] is None else 100 * r["accuracy"], ".2f"), p50_text(r), speedup_text(r),
            status or status_text(r), ", ".join(r["aliases"]) or ""]


def _f(v, spec, none="-"):
    return none if v is None else format(v, spec)


def notes(rows: list[dict]) -> list[str]:
    """What the table's marks mean: the ranking, the tie groups, where the latencies were measured."""
    metrics = sorted({r["objective_metric"] for r in rows})
    out = [f"ranked by: {', '.join(metrics)} ({', '.join(objective.METRICS[m][0] for m in metrics)}) "
           f"of each run's judged artifact; =N: tied (for latency: the 95% intervals overlap)"]
    for t in sorted({r["tie"] for r in rows if r.get("tie")}, key=lambda t: int(t[1:])):
        members = [f"#{r['rank'].lstrip('=')} {r['artifact']} ({r['overrides'] or r['run'] or r['run_id'][:8]})"
                   for r in rows if r.get("tie") == t]
        out.append(f"{t}: no measurable difference in p50 between {', '.join(members)} (intervals overlap)")
    if any(r["latency_p50_ms"] is not None and not latency_ci(r) for r in rows):
        out.append("no CI: timed once (an older run): no verdict on a latency difference is possible")
    out += [f"latency: measured on {m}" for m in sorted({r["measured_on"] for r in rows if r["measured_on"]})]
    return out


def table(rows: list[dict], width: int = WIDTH) -> str:
    """The leaderboard in at most `width` columns: problems as numbered notes under it, a device column only when
    the devices differ, long cells wrapped."""
    problems: list[str] = []
    body = []
    for i, r in enumerate(rows):
        status = None
        if not r["ok"] and not r.get("not_runnable") and r["verdict"] != "n/a":
            refs = []
            for p in r["problems"] or ["failed"]:
                if p not in problems:
                    problems.append(p)
                refs.append(str(problems.index(p) + 1))
            status = "✗ FAIL [" + ",".join(refs) + "]"
        c = cells(r, status)
        if i and rows[i - 1]["run_id"] == r["run_id"]:  # the run's other models: its job and device said above
            c[1] = c[2] = ""
        body.append(c)
    head = list(HEAD)
    devices = {r["device"] for r in rows}
    extra = []
    if len(devices) == 1:
        k = head.index("device")
        head.pop(k)
        body = [b[:k] + b[k + 1:] for b in body]
        extra.append(f"device: {devices.pop()}")
    lines = extra + [f"[{i}] {p}" for i, p in enumerate(problems, start=1)] + notes(rows)
    return "\n".join(render(head, body, width, wrap=("job", "registry", "status"), drop_empty=False)
                     + wrap_notes(lines, width))


# --- Pareto plot ------------------------------------------------------------------------------------------------------
def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both latency (lower) and accuracy (higher)."""
    front = []
    for i, (x, y) in enumerate(points):
        if not any((x2 <= x and y2 >= y) and (x2 < x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i):
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def merge_identical(rows: list[dict]) -> list[dict]:
    """One point per distinct model: rows holding the same file (same sha256, else same cache key, e.g. the fp32
    baseline every job of a sweep reuses from the cache) become one, at the median of their timings, listing the
    runs it came from."""
    import statistics

    groups: dict[Any, list[dict]] = {}
    for r in rows:
        key = r.get("sha256") or r.get("cache_key") or (r["run_id"], r["artifact"])
        groups.setdefault(key, []).append(r)
    out = []
    for members in groups.values():
        m = dict(members[0])
        lats = [x["latency_p50_ms"] for x in members if x["latency_p50_ms"] is not None]
        m["latency_p50_ms"] = statistics.median(lats) if lats else None
        cis = [latency_ci(x) for x in members if latency_ci(x)]
        m["latency_p50_ci"] = [min(c[0] for c in cis), max(c[1] for c in cis)] if cis else None
        m["merged"] = len(members)
        m["ranks"] = sorted({x["rank"].lstrip("=") for x in members}, key=lambda v: int(v))
        m["ok"] = all(x["ok"] for x in members)
        out.append(m)
    return out


def point_label(m: dict) -> str:
    runs = (f"{m['merged']} runs (#" + ",#".join(m["ranks"]) + ")") if m.get("merged", 1) > 1 else \
        f"#{m['rank'].lstrip('=')}"
    extra = f" {m['overrides']}" if m.get("overrides") and m.get("merged", 1) == 1 else ""
    acc = "-" if m["accuracy"] is None else f"{100 * m['accuracy']:.2f}%"
    status = "pass" if m["ok"] else "FAIL"
    tie = f" (tie {m['tie']})" if m.get("tie") and m.get("merged", 1) == 1 else ""
    return f"{runs} {m['artifact']} {m['format']} {m['precision']}{extra}: {acc}, {p50_text(m, False)} ms{tie}, {status}"


def plot(rows: list[dict], path: Path, title: str) -> dict:
    """Accuracy vs host latency (x error bars: the p50 interval), colour = device, shape = precision, hollow = gate
    failed; every point numbered and listed under the plot; identical models merged; Pareto front drawn bold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    plotted = [r for r in rows if r["accuracy"] is not None and r["latency_p50_ms"] is not None]
    skipped = len(rows) - len(plotted)
    pts = merge_identical(plotted)
    pts.sort(key=lambda m: (m["latency_p50_ms"], -m["accuracy"]))
    xy = [(m["latency_p50_ms"], 100 * m["accuracy"]) for m in pts]
    front = pareto_front(xy)
    listed = pts[:40]
    fig_h = 6 + 0.16 * len(listed)
    fig = plt.figure(figsize=(10, fig_h), dpi=110)
    ax = fig.add_axes([0.08, 1 - 5.2 / fig_h, 0.62, 4.6 / fig_h])
    devices = sorted({m["device"] for m in pts}) or ["-"]
    colors = {d: plt.cm.tab10(i % 10) for i, d in enumerate(devices)}
    shapes = {"fp32": "o", "fp16": "s", "int8": "^"}
    if front:
        fx, fy = [xy[i][0] for i in front], [xy[i][1] for i in front]
        ax.step(fx, fy, where="post", color="crimson", lw=2.2, zorder=1, alpha=0.85)
        ax.scatter(fx, fy, s=260, facecolors="none", edgecolors="crimson", linewidths=2.0, zorder=2)
    for k, (m, (x, y)) in enumerate(zip(pts, xy), start=1):
        ci = latency_ci(m)
        if ci:
            ax.errorbar(x, y, xerr=[[max(x - ci[0], 0)], [max(ci[1] - x, 0)]], fmt="none", ecolor="0.45", lw=1,
                        capsize=3, zorder=2)
        c = colors[m["device"]]
        ax.scatter(x, y, s=90, marker=shapes.get(m["precision"], "D"), zorder=3, linewidths=1.2,
                   facecolors=c if m["ok"] else "white", edgecolors="black" if m["ok"] else c)
        ax.annotate(str(k), (x, y), xytext=(5, 4), textcoords="offset points", fontsize=8, zorder=4,
                    bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.7})
    ax.set_xlabel("latency p50 (ms), measured on this host; bars: 95% interval")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(title, fontsize=11)
    ax.grid(True, alpha=0.3)
    handles = [Line2D([], [], marker="o", ls="", color=colors[d], markersize=8, label=f"device: {d}") for d in devices]
    handles += [Line2D([], [], marker=mk, ls="", color="0.5", markersize=8, label=p) for p, mk in shapes.items()
                if any(m["precision"] == p for m in pts)]
    handles.append(Line2D([], [], marker="o", ls="", markerfacecolor="white", markeredgecolor="0.3", markersize=8,
                          label="hollow: gate FAIL"))
    handles.append(Line2D([], [], color="crimson", lw=2.2, marker="o", markerfacecolor="none", markersize=11,
                          label="Pareto front (ringed)"))
    fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(0.72, 1 - 0.6 / fig_h), fontsize=8, frameon=True)
    lines = [f"{k:>2}  {'*' if (k - 1) in front else ' '} {point_label(m)}" for k, m in enumerate(listed, start=1)]
    if len(pts) > len(listed):
        lines.append(f"... {len(pts) - len(listed)} more: see leaderboard.html / leaderboard.json")
    if skipped:
        lines.append(f"{skipped} artifact(s) without a measured accuracy and latency (e.g. Core ML on Linux, or not "
                     f"benchmarked) are not plotted")
    fig.text(0.02, 1 - 5.75 / fig_h, "points (* = on the Pareto front):\n" + "\n".join(lines), va="top",
             fontsize=7.5, family="monospace")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return {"plotted": len(plotted), "points": len(pts), "skipped": skipped,
            "front": [f"{pts[i]['run_id']}:{pts[i]['artifact']}" for i in front],
            "labels": [point_label(m) for m in pts]}


# --- HTML ---------------------------------------------------------------------------------------------------------------
CSS = """body{font-family:"DejaVu Sans",system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;font-size:13px}th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}
th{background:#f3f3f3;cursor:pointer;user-select:none}th:after{content:" \\2195";color:#aaa}
tr.bad td{color:#b00020}tr.best td{font-weight:600}td.tie{background:#fff6d5}img{max-width:100%;border:1px solid #ddd}
.note{color:#666;font-size:12px}"""
# Sorting by a click on a column header: a few lines of the page's own script, no external resource.
SORT_JS = """document.querySelectorAll('table.sortable th').forEach(function(th,i){th.addEventListener('click',function(){
var tb=th.closest('table').tBodies[0],rs=Array.from(tb.rows),d=th.dataset.dir==='asc'?-1:1;th.dataset.dir=d>0?'asc':'desc';
rs.sort(function(a,b){var x=a.cells[i].dataset.v,y=b.cells[i].dataset.v,nx=parseFloat(x),ny=parseFloat(y);
if(!isNaN(nx)&&!isNaN(ny))return d*(nx-ny);return d*String(x).localeCompare(String(y));});
rs.forEach(function(r){tb.appendChild(r);});});});"""


def _sort_value(h: str, r: dict, text: str) -> str:
    v = {"#": r["rank"].lstrip("="), "MB": r["size_mb"], "top-1 %": r["accuracy"], "p50 ms (95% CI)": r["latency_p50_ms"],
         "speed-up": r["speedup"]}.get(h, text)
    return "" if v is None else str(v)


def write_html(rows: list[dict], png: Path, path: Path, title: str, table_text: str, ui: str = UI) -> None:
    """One file: inline CSS and script, the PNG embedded as a data URI; each row links to its MLflow run."""
    img = base64.b64encode(png.read_bytes()).decode()
    trs = []
    for r in rows:
        cls = "bad" if not r["ok"] else ("best" if r["rank"].lstrip("=") == "1" and r["judged"] else "")
        tds = []
        for h, c in zip(HEAD, cells(r)):
            body = html_mod.escape(c)
            if h == "job" and r.get("experiment_id"):
                url = f"{ui.rstrip('/')}/#/experiments/{r['experiment_id']}/runs/{r['run_id']}"
                body = f"<a href='{html_mod.escape(url)}' title='MLflow run {r['run_id']}'>{body or r['run_id'][:8]}</a>"
            tcls = " class='tie'" if h.startswith("p50") and r.get("tie") else ""
            tds.append(f"<td{tcls} data-v='{html_mod.escape(_sort_value(h, r, c))}'>{body}</td>")
        trs.append(f"<tr class='{cls}'>" + "".join(tds) + "</tr>")
    lines = notes(rows)
    path.write_text(f"""<!doctype html><html><head><meta charset="utf-8"><title>{html_mod.escape(title)}</title>
<style>{CSS}</style></head><body><h1>{html_mod.escape(title)}</h1>
<p><img alt="Pareto plot: accuracy vs latency" src="data:image/png;base64,{img}"></p>
<p class="note">Click a column header to sort. Each job links to its MLflow run ({html_mod.escape(ui)}).</p>
<table class="sortable"><thead><tr>{''.join(f'<th>{html_mod.escape(h)}</th>' for h in HEAD)}</tr></thead><tbody>
{''.join(trs)}</tbody></table>
{''.join(f'<p class="note">{html_mod.escape(n)}</p>' for n in lines)}
<p class="note">Latencies are measured on the host named above, not on the device; device estimates, where present, are
labelled as estimates. Core ML artifacts cannot run on Linux and have no number here.</p>
<script>{SORT_JS}</script></body></html>""")

