"""`edge-pipeline gate --against champion [run=DIR]`: the release gate for CI. This run's deployable model (the
artifact its summary judges) against a version of the MLflow registered model of the same recipe and device (the
`champion` alias by default): accuracy with its sampling interval, latency timed again side by side, size, device
estimate (pipeline.report.release judges). Writes a Markdown report fit for a pull-request comment
(<run>/release_gate.md) and prints it. A run with `gate.against=champion` does the same before it registers itself.

Exit status: 0 no regression beyond the noise (or nothing to compare with yet), 1 a regression, 2 bad input (no run
folder, no MLflow store, no such version).
"""
from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from pipeline.cli import args as cli_args
from pipeline.core.errors import ConfigError
from pipeline.report import release
from pipeline.report.schema import Release, Summary

KEYS = {"against": "champion (default) | candidate | a version number of the registered model",
        "run": "the run folder to judge (default: outputs/latest, the newest run)",
        "tolerance_pct": "a slowdown or growth below this is no regression even when measurable (default: the "
                         "run's gate.tolerance_pct)",
        "iterations": "timed runs of each model, side by side (default 100)",
        "report": "where to write the Markdown report (default: <run>/release_gate.md)"}
REPORT = "release_gate.md"


def _samples(summary: Summary, name: str) -> int | None:
    """How many validation images the model's accuracy was measured on (its evaluate task's count)."""
    st = next((s for s in summary.stages if s.name == f"evaluate[{name}]"), None)
    n = (st.metrics if st else {}).get("samples")
    return int(n) if n else None


def side(summary: Summary, label: str, artifact: str | None = None) -> release.Side:
    row = summary.row(artifact) if artifact else summary.judged
    if row is None:
        raise ConfigError(f"{summary.run_dir}: the run has no model {artifact or '(judged)'} to compare")
    est = (row.estimate or {}).get("latency_ms")
    return release.Side(label=label, artifact=row.name, format=row.format, precision=row.precision,
                        sha256=row.sha256, size_bytes=row.size_bytes, accuracy=row.accuracy,
                        samples=_samples(summary, row.name), estimate_ms=est if isinstance(est, (int, float)) else None,
                        run_id=summary.mlflow.get("run_id"))


def _version(client, name: str, against: str, summary: Summary):
    """The registry version to compare with, or (None, why). A run that became champion itself is compared with the
    champion it replaced."""
    from mlflow.exceptions import MlflowException

    try:
        mv = (client.get_model_version(name, against) if against.isdigit()
              else client.get_model_version_by_alias(name, against))
    except MlflowException:
        return None, f"{against} of registered model {name!r} (none yet: this run's model is the first to compare)"
    own = summary.mlflow.get("run_id") and (mv.tags or {}).get("pipeline_run_id") == summary.mlflow.get("run_id")
    if own and not against.isdigit():
        previous = (summary.registry or {}).get("previous_champion")
        if against != "champion" or not previous:
            return None, f"{against} of {name!r} is this run's own model; there is no earlier one to compare with"
        mv = client.get_model_version(name, previous)
    return mv, None


def _champion(client, mv, workdir: Path) -> tuple[Summary, dict, Path]:
    """The version's run summary, its artifact.json and the folder its files were downloaded to."""
    run_id = (mv.tags or {}).get("pipeline_run_id")
    if not run_id:
        raise ConfigError(f"registry version {mv.version} of {mv.name!r} names no pipeline run (pipeline_run_id tag)")
    summary = Summary.load(client.download_artifacts(run_id, "summary.json", str(workdir)))
    files = Path(client.download_artifacts(mv.run_id, mv.tags["artifact"], str(workdir / "model")))
    meta_file = files / "artifact.json"
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    return summary, meta, files


def _own_meta(summary: Summary, outputs: Path, key: str) -> dict:
    """This run's artifact metadata from its cache entry (the run folder holds the files, the entry their meta)."""
    try:
        return json.loads((outputs / "cache" / "entries" / key / "entry.json").read_text())["artifact"]
    except (OSError, ValueError, KeyError):
        return {}


def _time(new: tuple[str, Path, dict], old: tuple[str, Path, dict], threads: int, iterations: int) -> dict:
    """Both models timed round-robin in one fresh process on this host: champion p50 / this p50 with its interval."""
    from pipeline.runtimes import host_threads, isolated, not_runnable_reason

    for fmt, _, meta in (new, old):
        why = not_runnable_reason(fmt, meta)
        if why:
            return {"why": why}
    threads = host_threads(threads)
    models = [{"name": n, "fmt": fmt, "path": str(path), "meta": meta, "shape": [1, *meta["input_shape"][1:]]}
              for n, (fmt, path, meta) in (("new", new), ("old", old))]
    r = isolated.measure(models, threads, 10, iterations)
    if r.get("failed"):
        return {"why": "; ".join(f"{'this run' if n == 'new' else 'the other'}: {w}" for n, w in r["failed"].items())}
    m, s = r["models"], r["speedups"]["new"]["old"]
    ci = lambda x: [x.get("latency_p50_ci_low_ms"), x.get("latency_p50_ci_high_ms")]
    return {"speedup": s["speedup"], "ci": s["ci"], "new_p50": m["new"]["latency_p50_ms"],
            "old_p50": m["old"]["latency_p50_ms"], "new_ci": ci(m["new"]), "old_ci": ci(m["old"]),
            "measured_on": f"this host ({r['cpu']}), {threads} thread(s), both models round-robin in one process"}


def judge_run(summary: Summary, cfg: Any, client, against: str = "champion", tolerance_pct: float | None = None,
              iterations: int = 100, report: Path | None = None) -> Release:
    """The release verdict of a finished run, its Markdown report written (`report`, default <run>/release_gate.md)."""
    from pipeline.tracking.registry import model_name

    outputs = Path(summary.run_dir).parents[2]
    name = model_name(cfg, summary.recipe)
    tol = float(cfg.gate.get("tolerance_pct", 5.0) if tolerance_pct is None else tolerance_pct)
    new = side(summary, "this run")
    row = summary.judged
    mv, why = _version(client, name, against, summary)
    old, timing, notes = None, None, []
    title = f"`{summary.recipe}` on `{summary.device.get('name')}`: this run's deployable model"
    if mv is not None:
        from pipeline.core import console

        with tempfile.TemporaryDirectory() as d, console.quiet(env={"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}):
            champ, meta, files = _champion(client, mv, Path(d))
            old = replace(side(champ, f"{against} v{mv.version}", mv.tags.get("artifact")), run_id=mv.tags.get(
                "pipeline_run_id"))
            mine = _own_meta(summary, outputs, row.cache_key)
            if meta and mine:
                timing = _time((row.format, Path(summary.run_dir) / row.path, mine.get("meta", {})),
                               (meta["format"], files / meta["path"], meta.get("meta", {})),
                               int(cfg.device.get("threads", 0)), iterations)
            else:
                timing = {"why": "the metadata needed to load " + ("this run's model" if not mine else
                                                                   f"v{mv.version}") + " is not recorded"}
        title += f" against {against} v{mv.version} of registered model `{name}` (MLflow run {old.run_id})."
        notes.append(f"accuracy: the difference with its 95% interval (Newcombe, from Wilson intervals on each "
                     f"validation count); latency: timed again now, side by side, {iterations} runs each; size and "
                     f"estimate: a change above {tol:g}% counts")
    against_words = f"{against} v{mv.version} of {name}" if mv is not None else why
    verdict = release.judge(new, old, against_words, timing, tol, summary.task.get("metric") or "top-1",
                            summary.device.get("display_name") or summary.device.get("name"))
    path = Path(report) if report else Path(summary.run_dir) / REPORT
    text = release.markdown(verdict, new, old, title, timing, tol, summary.task.get("metric") or "top-1",
                            summary.device.get("display_name") or "the device", notes)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return replace(verdict, report=str(path))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    for flag in [a for a in argv if a.startswith("--") and a[2:] in KEYS]:  # `--against champion`, as CI writes it
        i = argv.index(flag)
        argv[i:i + 2] = [f"{flag[2:]}={argv[i + 1] if i + 1 < len(argv) else ''}"]
    try:
        args = cli_args.parse(argv, KEYS)
    except cli_args.HelpRequested:
        print(cli_args.help_text("edge-pipeline gate", __doc__.strip().split("\n\n")[0], KEYS))
        return 0
    except cli_args.UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        verdict = _run(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(Path(verdict.report).read_text())
    print(f"report: {verdict.report}")
    return 1 if verdict.status == "fail" else 0


def _run(args: dict) -> Release:
    from omegaconf import OmegaConf

    from pipeline.report.schema import SchemaError

    run = Path(str(args.get("run") or "outputs/latest")).expanduser()
    try:
        summary = Summary.load(run / "summary.json")
        cfg = OmegaConf.load(run / "config.yaml")
    except (SchemaError, OSError) as e:
        raise ConfigError(f"run={run}: not a finished run folder ({e}); name one: edge-pipeline gate run=outputs/runs/"
                          f"<recipe>/<run>") from None
    if summary.status != "success" or summary.judged is None:
        raise ConfigError(f"{run}: the run did not finish with a model ({summary.status}); there is nothing to gate")
    uri = summary.mlflow.get("tracking_uri")
    if not uri:
        raise ConfigError(f"{run}: the run was not tracked (tracking=none), so there is no registry to compare with")
    from mlflow.tracking import MlflowClient

    from pipeline.core import console

    with console.quiet(("mlflow", "alembic")):
        client = MlflowClient(uri)
        try:
            return judge_run(summary, cfg, client, str(args.get("against") or "champion"),
                             float(args["tolerance_pct"]) if args.get("tolerance_pct") else None,
                             int(args.get("iterations") or 100), Path(args["report"]) if args.get("report") else None)
        except ValueError as e:
            raise ConfigError(f"{e}") from None


if __name__ == "__main__":
    sys.exit(main())
