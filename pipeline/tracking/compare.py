"""Compare runs from MLflow: a leaderboard on the console, a Pareto plot (PNG) and a self-contained HTML report.

    edge-pipeline compare experiment=mobilenet_int8 [sweep=ID] [artifacts=final|all]
                               [paths.outputs=DIR | tracking.uri=http://HOST:PORT] [out=DIR]

Reads every pipeline run of the experiment (or of one sweep) through MLflow, each run's summary.json artifact, and the
registry's aliases. Rows use the summary table's columns; runs are ranked by their recipe's objective. Writes
leaderboard.png, leaderboard.html and leaderboard.json to `out` (default <paths.outputs>/compare/<experiment>[-<sweep>]).
Exit status: 0 done, 2 bad arguments or nothing to compare.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from pipeline.core import arguments as cli_args
from pipeline.report import objective
from pipeline.report.schema import SchemaError, Summary
from pipeline.report.leaderboard import UI, latency_ci, plot, table, write_html

from pipeline.library import stats

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


def _tied(a: dict, b: dict, metric: str) -> bool:
    """Two judged rows tie on the objective: latency within each other's intervals, other metrics equal."""
    if metric == "latency_ms":
        ia, ib = latency_ci(a), latency_ci(b)
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
                    and latency_ci(a) and latency_ci(b) and stats.compare({"ci": latency_ci(a)}, {"ci": latency_ci(b)}) == stats.TIE):
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
