"""Compare runs from MLflow: a leaderboard on the console, a Pareto plot (PNG) and a self-contained HTML report.

    edge-pipeline compare experiment=mobilenet_int8 [sweep=ID] [artifacts=final|all]
                               [paths.outputs=DIR | tracking.uri=http://HOST:PORT] [out=DIR]

Reads every pipeline run of the experiment (or of one sweep) through MLflow, each run's summary.json artifact, and the
registry's aliases. Rows use the summary table's columns; runs are ranked by their recipe's objective. Writes
leaderboard.png, leaderboard.html and leaderboard.json to `out` (default <paths.outputs>/compare/<experiment>[-<sweep>]).
Exit status: 0 done, 2 bad arguments or nothing to compare.
"""
from __future__ import annotations

import base64
import html as html_mod
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from pipeline.cli import args as cli_args
from pipeline.report import objective
from pipeline.report.schema import SchemaError, Summary
from pipeline.report.table import render, wrap_notes

from pipeline.library import stats

UI = "http://127.0.0.1:5000"  # `make ui`; compare ui=URL for another MLflow UI
KEYS = {"experiment": "experiment name (default: every experiment holding a run of the sweep)",
        "sweep": "sweep id (tag sweep.id), to compare the jobs of one sweep",
        "artifacts": "final (one row per run: its judged artifact) | all (every model of every run)",
        "paths.outputs": "outputs folder whose embedded MLflow store to read (default: outputs)",
        "tracking.uri": "an MLflow tracking URI instead (e.g. http://127.0.0.1:5000)",
        "out": "folder for leaderboard.png/.html/.json",
        "ui": f"the MLflow UI the HTML's run links point at (default {UI})"}


UsageError = cli_args.UsageError


# --- reading ------------------------------------------------------------------------------------------------------
def _summary(client, run, skipped: list[str]) -> Summary | None:
    """The run's summary.json, typed; None (with the reason in `skipped`) for a run killed before writing one or one
    written by another version."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per run is noise here
    with tempfile.TemporaryDirectory() as d:
        try:
            p = client.download_artifacts(run.info.run_id, "summary.json", d)
        except Exception:  # a run killed before writing its summary
            return None
        try:
            return Summary.load(p)
        except SchemaError as e:
            skipped.append(f"run {run.info.run_id[:8]} ({run.info.run_name}): {str(e).split(': ', 1)[-1]}")
            return None


def _champions(client, names: set[str]) -> dict[tuple[str, str], list[str]]:
    """(registered model, pipeline run id) -> the aliases that point at a version made by that run, as of now.

    A version is registered from the stage's nested run (it holds the model file), so its run_id is the stage run:
    the pipeline (parent) run is the version's `pipeline_run_id` tag, or else the stage run's parent."""
    out: dict[tuple[str, str], list[str]] = {}
    parents: dict[str, str | None] = {}
    for name in names:
        try:
            aliases = client.get_registered_model(name).aliases or {}
        except Exception:
            continue
        for alias, version in aliases.items():
            try:
                mv = client.get_model_version(name, str(version))
            except Exception:
                continue
            run_id = (mv.tags or {}).get("pipeline_run_id")
            if not run_id and mv.run_id:
                if mv.run_id not in parents:
                    try:
                        parents[mv.run_id] = client.get_run(mv.run_id).data.tags.get("mlflow.parentRunId")
                    except Exception:
                        parents[mv.run_id] = None
                run_id = parents[mv.run_id] or mv.run_id
            if run_id:
                out.setdefault((name, run_id), []).append(alias)
    return out


def load_rows(client, experiment_ids: list[str], sweep: str | None = None, artifacts: str = "final",
              skipped: list[str] | None = None) -> list[dict]:
    """One row per run (its judged artifact) or per run x artifact, ranked by the runs' objective. Runs whose
    summary.json this version cannot read are named in `skipped`."""
    filt = "tags.`sweep.role` = 'job'" if sweep else "tags.run_dir LIKE '%'"
    if sweep:
        filt += f" and tags.`sweep.id` = '{sweep}'"
    runs = client.search_runs(experiment_ids, filter_string=filt, max_results=5000, order_by=["attributes.start_time ASC"])
    rows = []
    for run in runs:
        s = _summary(client, run, skipped if skipped is not None else [])
        if not s:
            continue
        tags = run.data.tags
        metrics = s.objective.get("metrics") or ["accuracy"]
        judged = s.judged
        chosen = s.artifacts if artifacts == "all" else ([judged] if judged else [])
        for a in chosen:
            lat, v = a.latency_ms or {}, a.verdict
            rows.append({
                "run_id": run.info.run_id, "run": run.info.run_name, "status": s.status,
                "device": s.device["name"], "recipe": s.recipe,
                "job": tags.get("sweep.job"), "overrides": tags.get("sweep.overrides") or "",
                "artifact": a.name, "format": a.format, "precision": a.precision, "size_mb": a.size_bytes / 1e6,
                "accuracy": a.accuracy, "accuracy_na": a.accuracy_na, "latency_p50_ms": lat.get("p50"),
                "latency_p90_ms": lat.get("p90"), "latency_p50_ci": lat.get("p50_ci"), "speedup_ci": v.speedup_ci,
                "experiment_id": run.info.experiment_id, "cache_key": a.cache_key, "sha256": a.sha256,
                "device_latency_ms": objective.METRICS["device_latency_ms"][1](a),
                "speedup": v.speedup, "size_ratio": v.size_ratio, "ok": v.ok, "verdict": v.status,
                "problems": list(v.problems), "measured_on": a.measured_on,
                "not_runnable": a.not_runnable, "judged": a is judged,
                "objective_metric": metrics[0], "objective": (s.objective.get("values") or {}).get(metrics[0]),
                "registry": (s.registry or {}).get("model") or tags.get("registry.model"), "aliases": [],
            })
    # Show only the overrides that differ between the compared jobs (device=..., calibration_samples=...).
    # Where outputs and logs went (paths.*, hydra.*) says nothing about the model.
    tokens = {r["run_id"]: [t for t in r["overrides"].split() if not t.lstrip("+~").startswith(("paths.", "hydra."))]
              for r in rows}
    swept = [set(t) for t in tokens.values() if t]
    common = set.intersection(*swept) if len(swept) > 1 else set()
    every = sorted({t for ts in tokens.values() for t in ts if t not in common})
    for r in rows:
        r["overrides"] = " ".join(short_override(t, every) for t in tokens[r["run_id"]] if t not in common)
    champs = _champions(client, {r["registry"] for r in rows if r["registry"]})
    for r in rows:
        if r["judged"]:
            r["aliases"] = sorted(champs.get((r["registry"], r["run_id"]), []))
    return rank(rows)


def _ci(r: dict) -> tuple[float, float] | None:
    ci = r.get("latency_p50_ci")
    return (float(ci[0]), float(ci[1])) if ci and None not in ci[:2] else None


def _tied(a: dict, b: dict, metric: str) -> bool:
    """Two judged rows tie on the objective: latency within each other's intervals, other metrics equal."""
    if metric == "latency_ms":
        ia, ib = _ci(a), _ci(b)
        return bool(ia and ib and stats.compare({"ci": ia}, {"ci": ib}) == stats.TIE)
    va, vb = a["objective"], b["objective"]
    return va is not None and vb is not None and abs(va - vb) <= 1e-9 * max(1.0, abs(va))


def short_override(token: str, tokens: list[str] | None = None) -> str:
    """stages.quantize.calibration_samples=64 -> calibration_samples=64: the last key, unless another override of the
    compared jobs ends in the same key (then quantize.calibration_samples=64, the stage kept)."""
    key, sep, value = token.partition("=")
    if not sep or "." not in key:
        return token
    last = key.rsplit(".", 1)[1]
    same = {t.partition("=")[0] for t in (tokens or []) if t.partition("=")[0].rsplit(".", 1)[-1] == last}
    if len(same) > 1:
        return (key[len("stages."):] if key.startswith("stages.") else key) + "=" + value
    return f"{last}={value}"


def rank(rows: list[dict]) -> list[dict]:
    """Best objective first (per its direction); runs without a value last; a run's artifacts stay together.
    Runs that tie on the objective (for latency: overlapping intervals) share a rank ("=2")."""
    def run_key(r):
        v = r["objective"]
        if v is None:
            return (1, 0.0)
        return (0, -v if objective.METRICS[r["objective_metric"]][0] == "maximize" else v)

    best: dict[str, tuple] = {}
    judged: dict[str, dict] = {}
    for r in rows:
        if r["judged"] or r["run_id"] not in best:
            best[r["run_id"]] = run_key(r)
            judged[r["run_id"]] = r
    ordered = sorted(best, key=lambda rid: best[rid])
    order = {rid: i for i, rid in enumerate(ordered)}
    rows = sorted(rows, key=lambda r: (order[r["run_id"]], not r["judged"]))
    ranks: dict[str, str] = {}
    n = 0
    prev = None
    for i, rid in enumerate(ordered):
        j = judged[rid]
        if prev is not None and j["objective"] is not None and _tied(judged[prev], j, j["objective_metric"]):
            ranks[rid] = ranks[prev].lstrip("=")
            ranks[prev] = "=" + ranks[prev].lstrip("=")
            ranks[rid] = "=" + ranks[rid]
        else:
            ranks[rid] = str(i + 1)
            prev = rid
    for r in rows:
        r["rank"] = ranks[r["run_id"]]
    mark_ties(rows)
    return rows


def mark_ties(rows: list[dict]) -> None:
    """Models of the same format and precision from different runs whose p50 intervals overlap: one tie group each
    (r["tie"] = "T1", ...): no measurable difference between them, whatever their point values say."""
    parent = list(range(len(rows)))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, a in enumerate(rows):
        for j in range(i + 1, len(rows)):
            b = rows[j]
            if (a["run_id"] != b["run_id"] and (a["format"], a["precision"]) == (b["format"], b["precision"])
                    and _ci(a) and _ci(b) and stats.compare({"ci": _ci(a)}, {"ci": _ci(b)}) == stats.TIE):
                parent[find(i)] = find(j)
    groups: dict[int, list[int]] = {}
    for i in range(len(rows)):
        groups.setdefault(find(i), []).append(i)
    k = 0
    for r in rows:
        r["tie"] = None
    for members in sorted((m for m in groups.values() if len(m) > 1), key=lambda m: m[0]):
        k += 1
        for i in members:
            rows[i]["tie"] = f"T{k}"


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
    ci = _ci(r)
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
    if any(r["latency_p50_ms"] is not None and not _ci(r) for r in rows):
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
        cis = [_ci(x) for x in members if _ci(x)]
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
        ci = _ci(m)
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


def report(client, experiment_ids: list[str], sweep: str | None, out_dir: Path, title: str,
           artifacts: str = "final", ui: str = UI) -> dict:
    skipped: list[str] = []
    rows = load_rows(client, experiment_ids, sweep, artifacts, skipped)
    if not rows:
        raise UsageError("no pipeline run with a summary.json this version reads found"
                         + (f" for sweep {sweep!r}" if sweep else "") + "".join(f"; skipped {s}" for s in skipped))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    text = table(rows) + "".join(f"\nskipped {s}" for s in skipped)
    # The plot shows every model of the compared runs, whichever rows the table shows.
    all_rows = rows if artifacts == "all" else load_rows(client, experiment_ids, sweep, "all")
    png, page, data = out_dir / "leaderboard.png", out_dir / "leaderboard.html", out_dir / "leaderboard.json"
    info = plot(all_rows, png, title)
    write_html(rows, png, page, title, text, ui)
    data.write_text(json.dumps({"title": title, "rows": rows, "plot": info}, indent=2, default=str))
    return {"table": text, "rows": rows, "png": png, "html": page, "json": data, "files": [png, page, data]}


# --- command line -------------------------------------------------------------------------------------------------------
def parse(argv: list[str]) -> dict[str, str]:
    args = cli_args.parse(argv, KEYS)
    if "experiment" not in args and "sweep" not in args:
        raise UsageError("name what to compare: experiment=NAME and/or sweep=ID")
    if args.get("artifacts", "final") not in ("final", "all"):
        raise UsageError(f"artifacts must be final or all, got {args['artifacts']!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parse(argv)
    except cli_args.HelpRequested:
        print(cli_args.help_text("edge-pipeline compare", __doc__.strip().splitlines()[0], KEYS))
        return 0
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        from mlflow.tracking import MlflowClient

        from pipeline.tracking import tracker as tracking

        outputs = Path(os.path.expanduser(args.get("paths.outputs", "outputs"))).resolve()
        uri = args.get("tracking.uri") or tracking.local_uri(outputs)
        if not uri.startswith(("http://", "https://")) and not (outputs / "mlflow.db").exists():
            raise UsageError(f"no MLflow store at {outputs / 'mlflow.db'}; pass paths.outputs=DIR or tracking.uri=URI")
        problem = tracking.check_server(uri, 10)
        if problem:
            raise UsageError(f"the MLflow server at {uri} did not answer ({problem})")
        client = MlflowClient(uri)
        if "experiment" in args:
            exp = client.get_experiment_by_name(args["experiment"])
            if exp is None:
                names = sorted(e.name for e in client.search_experiments())
                raise UsageError(f"experiment={args['experiment']!r} not found in {uri}; experiments: "
                                 f"{', '.join(names) or '(none)'}")
            ids = [exp.experiment_id]
        else:
            ids = [e.experiment_id for e in client.search_experiments()]
        name = args.get("experiment") or "sweep"
        label = name + (f"-{args['sweep']}" if "sweep" in args else "")
        out = Path(args.get("out") or outputs / "compare" / label)
        title = f"{name}" + (f", sweep {args['sweep']}" if "sweep" in args else "") + ": accuracy vs latency"
        result = report(client, ids, args.get("sweep"), out, title, args.get("artifacts", "final"),
                        args.get("ui", UI))
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(result["table"])
    print(f"\nwrote {result['png']}\n      {result['html']}\n      {result['json']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
