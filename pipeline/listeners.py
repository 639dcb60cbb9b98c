"""The run's listeners (see pipeline/events.py): MLflow tracking, the model registry and the console summary.
mlflow is imported only by the tracker these listeners are given (pipeline/tracking.py)."""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

from pipeline.core import provenance

from pipeline.report.schema import Summary
from pipeline.report.summary import headline_metrics
from pipeline.report.table import summary_table
from pipeline.core.events import Listener, RunInfo

log = logging.getLogger("pipeline")
MLFLOW_STATUS = {"success": "FINISHED", "failed": "FAILED", "killed": "KILLED"}


class MlflowListener(Listener):
    """One parent run per pipeline run (tags, the resolved config as params), one nested run per task, the summary's
    headline metrics, tags and files on the parent, closed with the run's status on every path."""

    def __init__(self, tracker):
        self.tracker = tracker
        self.stage_runs: dict[str, str] = {}  # stage -> the nested run holding its artifact

    def run_started(self, run: RunInfo) -> None:
        from pipeline.report import card

        t, cfg = self.tracker, run.cfg
        tags = {"recipe": run.recipe, "device": run.device, "device.runtime": cfg.device.runtime,
                "git.commit": provenance.git_commit(), "run_dir": str(run.run_dir), "command": run.command,
                **{f"lib.{k}": v for k, v in provenance.library_versions().items()}}
        if run.sweep:  # a sweep job is tagged with its sweep and nested under the sweep's parent run
            from pipeline.tracking import sweep as sweep_mod

            tags.update(sweep_mod.job_tags(run.sweep, t.uri))
        # a curated set of parameters (the run's overrides, the recipe's knobs, the device by name); the whole device
        # catalogue entry and whatever did not fit go into device.json
        params, rest = card.curated_params(cfg, run.overrides)
        run_id = t.start(card.run_name(run.recipe, run.device, run.overrides, run_id=run.run_dir.name.rsplit("-", 1)[-1]),
                         params, tags)
        run.mlflow = {"tracking_uri": t.uri, "experiment": t.experiment, "run_id": run_id}
        log.info("MLflow: %s  experiment=%s  run=%s", t.uri, t.experiment, run_id)
        (run.run_dir / "device.json").write_text(card.device_catalog_json(cfg, rest))
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

    def summary_ready(self, run: RunInfo, summary: Summary) -> None:
        t = self.tracker
        if not t.run_id or _broken(t):
            return
        try:
            t.log_metrics(t.run_id, {**headline_metrics(summary),
                                     **{f"objective.{k}": v for k, v in summary.objective["values"].items()}})
            # each format with the runtime that ran it (or why nothing ran it here), searchable as tags.artifact.<name>
            t.set_tags({f"artifact.{a.name}": f"{a.format} {a.precision}: {a.runtime or a.not_runnable or 'not run'}"
                        for a in summary.artifacts})
            # each model's verdict as a tag (the metric <artifact>.verdict_pass is 1/0)
            t.set_tags({f"verdict.{a.name}": (a.verdict.status + "".join(f"; {p}" for p in a.verdict.problems))[:5000]
                        for a in summary.artifacts})
        except Exception as e:  # keep going: closing the run with its status matters more than these numbers
            log.warning("could not log the summary to MLflow: %s", e)
        try:  # the run as a report: the card with its pictures, a description, a LoggedModel per artifact
            from pipeline.report import card

            card.log_card(t.client, t.run_id, summary, run.card, recipe_description=run.cfg.get("description"))
            # the registry links the version it makes to the LoggedModel of its artifact
            summary.mlflow["logged_models"] = card.log_logged_models(t.client, t.experiment_id, t.run_id, summary,
                                                                     self.stage_runs)
        except Exception as e:
            log.warning("could not log the summary card or the LoggedModels to MLflow: %s", e)

    def run_finished(self, run: RunInfo, summary: Summary, path: Path | None) -> None:
        t = self.tracker
        if not t.run_id or _broken(t):
            return
        try:
            t.log_files([p for p in (path, run.run_dir / "pipeline.log") if p is not None])
        except Exception as e:  # keep going: closing the run with its status matters more than these files
            log.warning("could not log summary.json and pipeline.log to MLflow: %s", e)

    def run_closed(self, run: RunInfo, status: str) -> None:
        with contextlib.suppress(Exception):  # (also when a signal came while the pipeline run was being created)
            self.tracker.end(MLFLOW_STATUS[status])


def _broken(tracker) -> bool:
    """The store failed during the run (full disk, lock, deadline): the run fails with that one message; logging the
    summary would only repeat it. Closing the run is still tried (run_closed)."""
    fault = getattr(tracker.client, "fault", None)
    if fault:
        log.debug("MLflow: the summary is not logged (%s)", fault)
    return bool(fault)


class CardListener(Listener):
    """The run card (summary_card.md / .html with its pictures) in <run folder>/card, before MLflow logs it."""

    def summary_ready(self, run: RunInfo, summary: Summary) -> None:
        from pipeline.report import card

        try:
            run.card = card.write_card(summary, run.run_dir)
        except Exception as e:  # the card is a by-product of the run: say so, keep going
            log.warning("could not write the run card: %s", e)


class RegistryListener(Listener):
    """Registers the judged artifact of a successful run whose gates pass (pipeline/registry.py)."""

    def __init__(self, tracker):
        self.tracker = tracker

    def run_succeeded(self, run: RunInfo, summary: Summary) -> None:
        if not run.cfg.registry.enabled:
            summary.registry = {"registered": False, "reason": "registry.enabled=false: this recipe registers "
                                "nothing (add registry.enabled=true to register its model)"}
            log.info("model registry: nothing registered (registry.enabled=false)")
            return
        if self.tracker.run_id and summary.status == "success":
            from pipeline.tracking import registry

            summary.registry = registry.register(self.tracker, summary, run.cfg, run.outputs)


class MeasurementListener(Listener):
    """Records what a benchmark measured on a device (device.connection) in the measurement store under
    paths.outputs, once the stage has succeeded: a failed or interrupted measurement records nothing, a reused one is
    not recorded again, and a task that runs again (cache.force, a retry) replaces its rows (keyed by its cache key)."""

    def task_finished(self, run: RunInfo, record: Any, out: Path | None) -> None:
        m = record.info.get("device_measurement") if out is not None and record.status == "ran" else None
        if not m:
            return
        from pipeline.devices import store

        try:
            store.record_measurement(store.path_in(run.outputs), m["device"], m["result"], m["models"],
                                     run=record.name, task_key=record.cache_key)
        except Exception as e:  # the measurement itself is in the run's summary; the store is a by-product
            log.warning("could not record the device measurement of %s in the measurement store: %s",
                        record.name, e)


class ConsoleListener(Listener):
    """The summary table on standard output, where summary.json is, and last one line naming the deployable
    artifact."""

    def run_finished(self, run: RunInfo, summary: Summary, path: Path | None) -> None:
        if path is None:  # (the error says it was not written)
            return
        from pipeline.report import crossformat

        for doc in crossformat.tables(summary):
            print(crossformat.console(doc) + "\n", flush=True)
        if summary.artifacts:
            print(summary_table(summary), flush=True)
        latest = run.outputs / "latest"
        for line in (f"summary: {path}", f"latest run: {latest}" if latest.is_symlink() else None,
                     deployable_line(summary)):
            if line:
                print(line, flush=True)


def deployable_line(summary: Summary) -> str | None:
    """`deployable: <full path> (onnx int8, 0.52 MB), verdict: pass` for the artifact the run is judged on (gate.artifact,
    pipeline.report.judge); `not deployable as is: ...` with what it misses when it is not a pass. None for a failed
    run or one without models."""
    row = summary.judged
    if summary.status != "success" or row is None:
        return None
    path = Path(summary.run_dir) / row.path  # (a relative run path, or the cache entry's absolute path)
    v = row.verdict
    verdict = f"verdict: {v.status}" + (f" ({'; '.join(v.problems)})" if v.problems else "")
    lead = "deployable" if v.ok else "not deployable as is"
    rel = summary.release
    if rel is not None:
        verdict += f"; release gate against {rel.against}: {rel.headline}"
        lead = lead if rel.passed else "not deployable as is"
    return f"{lead}: {path} ({row.format} {row.precision}, {row.size_bytes / 1e6:.2f} MB), {verdict}"
