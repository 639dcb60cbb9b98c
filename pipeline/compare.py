"""Compare runs from MLflow: a leaderboard on the console, a Pareto plot (PNG) and a self-contained HTML report.

    python -m pipeline.compare experiment=mobilenet_int8 [sweep=ID] [artifacts=final|all]
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

from pipeline import objective

KEYS = {"experiment": "experiment name (default: every experiment holding a run of the sweep)",
        "sweep": "sweep id (tag sweep.id), to compare the jobs of one sweep",
        "artifacts": "final (one row per run: its judged artifact) | all (every model of every run)",
        "paths.outputs": "outputs folder whose embedded MLflow store to read (default: outputs)",
        "tracking.uri": "an MLflow tracking URI instead (e.g. http://127.0.0.1:5000)",
        "out": "folder for leaderboard.png/.html/.json"}


class UsageError(Exception):
    pass


# --- reading ------------------------------------------------------------------------------------------------------
def _summary(client, run) -> dict | None:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per run is noise here
    with tempfile.TemporaryDirectory() as d:
        try:
            p = client.download_artifacts(run.info.run_id, "summary.json", d)
            return json.loads(Path(p).read_text())
        except Exception:  # a run killed before writing its summary
            return None


def _champions(client, names: set[str]) -> dict[tuple[str, str], list[str]]:
    """(registered model, run id) -> the aliases that point at a version made by that run, as of now."""
    out: dict[tuple[str, str], list[str]] = {}
    for name in names:
        try:
            aliases = client.get_registered_model(name).aliases or {}
        except Exception:
            continue
        for alias, version in aliases.items():
            try:
                run_id = client.get_model_version(name, str(version)).run_id
            except Exception:
                continue
            out.setdefault((name, run_id), []).append(alias)
    return out


def load_rows(client, experiment_ids: list[str], sweep: str | None = None, artifacts: str = "final") -> list[dict]:
    """One row per run (its judged artifact) or per run x artifact, ranked by the runs' objective."""
    filt = "tags.`sweep.role` = 'job'" if sweep else "tags.run_dir LIKE '%'"
    if sweep:
        filt += f" and tags.`sweep.id` = '{sweep}'"
    runs = client.search_runs(experiment_ids, filter_string=filt, max_results=5000, order_by=["attributes.start_time ASC"])
    rows = []
    for run in runs:
        s = _summary(client, run)
        if not s:
            continue
        tags = run.data.tags
        obj = s.get("objective") or {}
        metrics = obj.get("metrics") or ["accuracy"]
        judged = objective.final_artifact(s, None if not obj else obj.get("artifact"))
        chosen = s.get("artifacts", []) if artifacts == "all" else ([judged] if judged else [])
        for a in chosen:
            lat = a.get("latency_ms") or {}
            rows.append({
                "run_id": run.info.run_id, "run": run.info.run_name, "status": s.get("status"),
                "device": s["device"]["name"], "recipe": s.get("recipe"),
                "job": tags.get("sweep.job"), "overrides": tags.get("sweep.overrides") or "",
                "artifact": a["name"], "format": a["format"], "precision": a["precision"],
                "size_mb": a["size_bytes"] / 1e6 if a.get("size_bytes") is not None else None,
                "accuracy": a.get("accuracy"), "latency_p50_ms": lat.get("p50"), "latency_p90_ms": lat.get("p90"),
                "device_latency_ms": objective.METRICS["device_latency_ms"][1](a),
                "speedup": a.get("speedup"), "size_ratio": a.get("size_ratio"), "ok": a.get("ok"),
                "problems": a.get("problems") or [], "measured_on": a.get("measured_on"),
                "not_runnable": a.get("not_runnable"), "judged": a is judged,
                "objective_metric": metrics[0], "objective": (obj.get("values") or {}).get(metrics[0]),
                "registry": (s.get("registry") or {}).get("model"), "aliases": [],
            })
    # Show only the overrides that differ between the compared jobs (device=..., calibration_samples=...).
    # Where outputs and logs went (paths.*, hydra.*) says nothing about the model.
    tokens = {r["run_id"]: [t for t in r["overrides"].split() if not t.lstrip("+~").startswith(("paths.", "hydra."))]
              for r in rows}
    swept = [set(t) for t in tokens.values() if t]
    common = set.intersection(*swept) if len(swept) > 1 else set()
    for r in rows:
        r["overrides"] = " ".join(t for t in tokens[r["run_id"]] if t not in common)
    champs = _champions(client, {r["registry"] for r in rows if r["registry"]})
    for r in rows:
        if r["judged"]:
            r["aliases"] = sorted(champs.get((r["registry"], r["run_id"]), []))
    return rank(rows)


def rank(rows: list[dict]) -> list[dict]:
    """Best objective first (per its direction); runs without a value last; a run's artifacts stay together."""
    def run_key(r):
        v = r["objective"]
        if v is None:
            return (1, 0.0)
        return (0, -v if objective.METRICS[r["objective_metric"]][0] == "maximize" else v)

    best: dict[str, tuple] = {}
    for r in rows:
        if r["judged"] or r["run_id"] not in best:
            best[r["run_id"]] = run_key(r)
    order = {rid: i for i, rid in enumerate(sorted(best, key=lambda rid: best[rid]))}
    rows = sorted(rows, key=lambda r: (order[r["run_id"]], not r["judged"]))
    n = 0
    seen = set()
    for r in rows:
        if r["run_id"] not in seen:
            seen.add(r["run_id"])
            n += 1
        r["rank"] = n
    return rows


# --- console table --------------------------------------------------------------------------------------------------
HEAD = ["#", "run", "device", "job overrides", "stage", "format", "precision", "size MB", "top-1 %", "p50 ms",
        "speed-up", "size ratio", "status", "registry"]


def _f(v, spec, none="-"):
    return none if v is None else format(v, spec)


def cells(r: dict) -> list[str]:
    status = "✅" if r["ok"] else "❌ " + "; ".join(r["problems"])
    if r.get("not_runnable"):
        status += " (not run on this host)"
    return [str(r["rank"]), r["run"] or r["run_id"][:8], r["device"], r["overrides"] or "-", r["artifact"], r["format"],
            r["precision"], _f(r["size_mb"], ".2f"), _f(None if r["accuracy"] is None else 100 * r["accuracy"], ".2f"),
            _f(r["latency_p50_ms"], ".2f"), _f(r["speedup"], ".2f", "") + ("x" if r["speedup"] else ""),
            _f(r["size_ratio"], ".2f", "") + ("x" if r["size_ratio"] else ""), status,
            ",".join(r["aliases"]) or ""]


def table(rows: list[dict]) -> str:
    body = [cells(r) for r in rows]
    widths = [max(len(c) for c in col) for col in zip(HEAD, *body)]
    line = lambda cs: "  ".join(c.ljust(w) for c, w in zip(cs, widths)).rstrip()
    out = [line(HEAD), line(["-" * w for w in widths]), *[line(c) for c in body]]
    metrics = sorted({r["objective_metric"] for r in rows})
    out.append(f"ranked by: {', '.join(metrics)} ({', '.join(objective.METRICS[m][0] for m in metrics)}) "
               f"of each run's judged artifact")
    out += [f"latency: measured on {m}" for m in sorted({r["measured_on"] for r in rows if r["measured_on"]})]
    return "\n".join(out)


# --- Pareto plot ------------------------------------------------------------------------------------------------------
def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both latency (lower) and accuracy (higher)."""
    front = []
    for i, (x, y) in enumerate(points):
        if not any((x2 <= x and y2 >= y) and (x2 < x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i):
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def plot(rows: list[dict], path: Path, title: str) -> dict:
    """Accuracy vs host latency, marker area ~ file size, colour = device, shape = precision, Pareto front joined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    pts = [r for r in rows if r["accuracy"] is not None and r["latency_p50_ms"] is not None]
    skipped = len(rows) - len(pts)
    fig, ax = plt.subplots(figsize=(9, 6), dpi=120)
    devices = sorted({r["device"] for r in rows})
    colors = {d: plt.cm.tab10(i % 10) for i, d in enumerate(devices)}
    shapes = {"fp32": "o", "fp16": "s", "int8": "^"}
    smax = max([r["size_mb"] or 0 for r in pts] + [1e-9])
    area = lambda mb: 40 + 460 * (mb or 0) / smax
    for r in pts:
        ax.scatter(r["latency_p50_ms"], 100 * r["accuracy"], s=area(r["size_mb"]), c=[colors[r["device"]]],
                   marker=shapes.get(r["precision"], "D"), alpha=0.7, edgecolors="black", linewidths=0.6)
    xy = [(r["latency_p50_ms"], 100 * r["accuracy"]) for r in pts]
    front = pareto_front(xy)
    if front:
        ax.plot([xy[i][0] for i in front], [xy[i][1] for i in front], "--", color="0.3", lw=1.2, zorder=0)
        for i in front:
            r = pts[i]
            label = f"#{r['rank']} {r['artifact']}" + (f" ({r['overrides']})" if r["overrides"] else "")
            ax.annotate(label[:60], xy[i], xytext=(6, 6), textcoords="offset points", fontsize=7)
    ax.set_xlabel("latency p50 (ms), measured on this host" if pts else "latency p50 (ms)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    handles = [Line2D([], [], marker="o", ls="", color=colors[d], markersize=8, label=f"device: {d}") for d in devices]
    handles += [Line2D([], [], marker=m, ls="", color="0.5", markersize=8, label=p) for p, m in shapes.items()
                if any(r["precision"] == p for r in pts)]
    sizes = sorted({round(r["size_mb"], 2) for r in pts if r["size_mb"]})
    for mb in ([sizes[0], sizes[-1]] if len(sizes) > 1 else sizes):
        handles.append(Line2D([], [], marker="o", ls="", color="white", markeredgecolor="black",
                              markersize=(area(mb) ** 0.5), label=f"{mb:.2f} MB"))
    handles.append(Line2D([], [], ls="--", color="0.3", label="Pareto front"))
    ax.legend(handles=handles, loc="best", fontsize=8, labelspacing=1.2, borderpad=1.0)
    if skipped:
        fig.text(0.01, 0.01, f"{skipped} artifact(s) without a measured accuracy and latency (e.g. Core ML on Linux, or "
                             f"not benchmarked) are not plotted", fontsize=7, color="0.35")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return {"plotted": len(pts), "skipped": skipped, "front": [pts[i]["run_id"] + ":" + pts[i]["artifact"] for i in front]}


# --- HTML ---------------------------------------------------------------------------------------------------------------
CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;font-size:13px}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}th{background:#f3f3f3}tr.bad td{color:#b00020}
tr.best td{font-weight:600}img{max-width:100%;border:1px solid #ddd}.note{color:#666;font-size:12px}"""


def write_html(rows: list[dict], png: Path, path: Path, title: str, table_text: str) -> None:
    """One file: inline CSS, the PNG embedded as a data URI, no external resource."""
    img = base64.b64encode(png.read_bytes()).decode()
    trs = []
    for r in rows:
        cls = "bad" if not r["ok"] else ("best" if r["rank"] == 1 and r["judged"] else "")
        trs.append(f"<tr class='{cls}'>" + "".join(f"<td>{html_mod.escape(c)}</td>" for c in cells(r)) + "</tr>")
    notes = [line for line in table_text.splitlines() if line.startswith(("ranked by", "latency:"))]
    path.write_text(f"""<!doctype html><html><head><meta charset="utf-8"><title>{html_mod.escape(title)}</title>
<style>{CSS}</style></head><body><h1>{html_mod.escape(title)}</h1>
<p><img alt="Pareto plot: accuracy vs latency" src="data:image/png;base64,{img}"></p>
<table><thead><tr>{''.join(f'<th>{html_mod.escape(h)}</th>' for h in HEAD)}</tr></thead><tbody>
{''.join(trs)}</tbody></table>
{''.join(f'<p class="note">{html_mod.escape(n)}</p>' for n in notes)}
<p class="note">Latencies are measured on the host named above, not on the device; device estimates, where present, are
labelled as estimates. Core ML artifacts cannot run on Linux and have no number here.</p></body></html>""")


def report(client, experiment_ids: list[str], sweep: str | None, out_dir: Path, title: str,
           artifacts: str = "final") -> dict:
    rows = load_rows(client, experiment_ids, sweep, artifacts)
    if not rows:
        raise UsageError("no pipeline run with a summary.json found" + (f" for sweep {sweep!r}" if sweep else ""))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    text = table(rows)
    # The plot shows every model of the compared runs, whichever rows the table shows.
    all_rows = rows if artifacts == "all" else load_rows(client, experiment_ids, sweep, "all")
    png, page, data = out_dir / "leaderboard.png", out_dir / "leaderboard.html", out_dir / "leaderboard.json"
    info = plot(all_rows, png, title)
    write_html(rows, png, page, title, text)
    data.write_text(json.dumps({"title": title, "rows": rows, "plot": info}, indent=2, default=str))
    return {"table": text, "rows": rows, "png": png, "html": page, "json": data, "files": [png, page, data]}


# --- command line -------------------------------------------------------------------------------------------------------
def parse(argv: list[str]) -> dict[str, str]:
    args = {}
    for a in argv:
        key, sep, value = a.partition("=")
        if not sep or key not in KEYS:
            raise UsageError(f"unknown argument {a!r}; use key=value with keys: " +
                             "; ".join(f"{k} ({v})" for k, v in KEYS.items()))
        args[key] = value
    if "experiment" not in args and "sweep" not in args:
        raise UsageError("name what to compare: experiment=NAME and/or sweep=ID")
    if args.get("artifacts", "final") not in ("final", "all"):
        raise UsageError(f"artifacts must be final or all, got {args['artifacts']!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parse(argv)
        from mlflow.tracking import MlflowClient

        from pipeline import tracking

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
        result = report(client, ids, args.get("sweep"), out, title, args.get("artifacts", "final"))
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(result["table"])
    print(f"\nwrote {result['png']}\n      {result['html']}\n      {result['json']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
