"""The run's listeners (see pipeline/events.py): MLflow tracking, the model registry and the console summary.
mlflow is imported only by the tracker these listeners are given (pipeline/tracking.py)."""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

from pipeline import provenance, report
from pipeline.events import Listener, RunInfo

log = logging.getLogger("pipeline")
MLFLOW_STATUS = {"success": "FINISHED", "failed": "FAILED", "killed": "KILLED"}


class MlflowListener(Listener):
    """One parent run per pipeline run (tags, the resolved config as params), one nested run per task, the summary's
    headline metrics, tags and files on the parent, closed with the run's status on every path."""

    def __init__(self, tracker):
        self.tracker = tracker
        self.stage_runs: dict[str, str] = {}  # stage -> the nested run holding its artifact

    def run_started(self, run: RunInfo) -> None:
        from pipeline import mlflow_report

        t, cfg = self.tracker, run.cfg
        tags = {"recipe": run.recipe, "device": run.device, "device.runtime": cfg.device.runtime,
                "git.commit": provenance.git_commit(), "run_dir": str(run.run_dir), "command": run.command,
                **{f"lib.{k}": v for k, v in provenance.library_versions().items()}}
        if run.sweep:  # a sweep job is tagged with its sweep and nested under the sweep's parent run
            from pipeline import sweep as sweep_mod

            tags.update(sweep_mod.job_tags(run.sweep, t.uri))
        # a curated set of parameters (the run's overrides, the recipe's knobs, the device by name); the whole device
        # catalogue entry and whatever did not fit go into device.json
        params, rest = mlflow_report.curated_params(cfg, run.overrides)
        run_id = t.start(mlflow_report.run_name(run.recipe, run.device, run.overrides), params, tags)
        run.mlflow = {"tracking_uri": t.uri, "experiment": t.experiment, "run_id": run_id}
        log.info("MLflow: %s  experiment=%s  run=%s", t.uri, t.experiment, run_id)
        (run.run_dir / "device.json").write_text(mlflow_report.device_catalog_json(cfg, rest))
        t.log_files([run.run_dir / "config.yaml", run.run_dir / "device.json"])
        try:
            t.close_orphans()
        except Exception as e:  # housekeeping only
            log.debug("could not close orphaned MLflow runs: %s", e)

    def task_finished(self, run: RunInfo, record: Any, out: Path | None) -> None:
        if out is None:  # a failed task: its own error is the one to report
            try:
                self.tracker.log_stage(record, None)
            except Exception as e:
                log.warning("could not log the failed stage %s to MLflow: %s", record.name, e)
            return
        rid = self.tracker.log_stage(record, out)
        if record.artifact is not None:
            self.stage_runs[record.stage] = rid

    def run_finished(self, run: RunInfo, summary: dict, path: Path | None) -> None:
        t = self.tracker
        if not t.run_id:
            return
        try:
            t.log_metrics(t.run_id, {**report.headline_metrics(summary),
                                     **{f"objective.{k}": v for k, v in summary["objective"]["values"].items()}})
            # each format with the runtime that ran it (or why nothing ran it here), searchable as tags.artifact.<name>
            t.set_tags({f"artifact.{a['name']}": f"{a['format']} {a['precision']}: "
                        f"{a.get('runtime') or a.get('not_runnable') or 'not run'}" for a in summary["artifacts"]})
            # each artifact's gate verdict as a tag (the metric <artifact>.gate_pass is 1/0)
            t.set_tags({f"gate.{a['name']}": ("pass" if a["gate"]["pass"] else "fail: " + "; ".join(a["gate"]["failed"]))[:5000]
                        for a in summary["artifacts"] if a.get("gate")})
            t.log_files([p for p in (path, run.run_dir / "pipeline.log") if p is not None])
        except Exception as e:  # keep going: closing the run with its status matters more than these files
            log.warning("could not log the summary to MLflow: %s", e)
        try:  # the run as a report: a summary card with the profile plots, a description, a LoggedModel per artifact
            from pipeline import mlflow_report

            plots = {p.parent.name: str(p) for p in sorted(run.run_dir.glob("reports/*/profile.png"))}
            plots.update({f"{p.parent.name}: Pareto front": str(p)  # (the optimize stage's accuracy/latency/size front)
                          for p in sorted(run.run_dir.glob("artifacts/*/optimize_front.png"))})
            mlflow_report.log_card(t.client, t.run_id, summary, plots, recipe_description=run.cfg.get("description"))
            mlflow_report.log_logged_models(t.client, t.experiment_id, t.run_id, summary, self.stage_runs)
        except Exception as e:
            log.warning("could not log the summary card or the LoggedModels to MLflow: %s", e)

    def run_closed(self, run: RunInfo, status: str) -> None:
        if self.tracker.run_id:
            with contextlib.suppress(Exception):
                self.tracker.end(MLFLOW_STATUS[status])


class RegistryListener(Listener):
    """Registers the judged artifact of a successful run whose gates pass (pipeline/registry.py)."""

    def __init__(self, tracker):
        self.tracker = tracker

    def summary_ready(self, run: RunInfo, summary: dict) -> None:
        if self.tracker.run_id and summary["status"] == "success":
            from pipeline import registry

            summary["registry"] = registry.register(self.tracker, summary, run.cfg, run.outputs)


class ConsoleListener(Listener):
    """The summary table on standard output, where summary.json is, and last one line naming the deployable
    artifact."""

    def run_finished(self, run: RunInfo, summary: dict, path: Path | None) -> None:
        if path is None:  # (the error says it was not written)
            return
        print(report.table(summary), flush=True)
        for line in (f"summary: {path}", deployable_line(summary)):
            if line:
                print(line, flush=True)


def deployable_line(summary: dict) -> str | None:
    """`deployable: <path> (onnx int8, 0.52 MB), gate: pass` for the artifact the run is judged on (gate.artifact,
    pipeline.judge); says FAILED and what it misses when its gate failed. None for a failed run or one without models."""
    gate = summary.get("gate") or {}
    row = next((a for a in summary["artifacts"] if a["name"] == gate.get("artifact")), None)
    if summary["status"] != "success" or row is None:
        return None
    path = Path(summary["run_dir"]) / row["path"]  # (a relative run path, or the cache entry's absolute path)
    with contextlib.suppress(ValueError):
        path = path.relative_to(Path.cwd())
    verdict = f"gate FAILED: misses {'; '.join(gate['failed'])}" if gate.get("pass") is False else "gate: pass"
    problems = f"; {'; '.join(row['problems'])}" if row.get("problems") else ""
    return (f"deployable: {path} ({row['format']} {row['precision']}, {row['size_bytes'] / 1e6:.2f} MB), "
            f"{verdict}{problems}")
