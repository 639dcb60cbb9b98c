"""The release gate's evidence: this run's deployable model (the artifact its summary judges) and a version of the
MLflow registered model of the same recipe and device (the `champion` alias by default), their numbers from their
runs' summaries, both files timed again side by side; pipeline.report.release judges, and the Markdown report fit for
a pull-request comment is written to <run>/release_gate.md. Used by a run with `gate.against` (before it registers
itself) and by `edge-pipeline gate` (pipeline.cli.gate). mlflow is imported by the caller's client."""
from __future__ import annotations

import json
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from pipeline.core.errors import ConfigError
from pipeline.report import release
from pipeline.report.schema import Release, Summary

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
    try:  # (a version registered before stage runs logged it has none: its latency is then not compared)
        meta = json.loads(Path(client.download_artifacts(mv.run_id, "artifact.json", str(workdir))).read_text())
    except Exception:  # mlflow raises several types for a missing artifact
        meta = {}
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
