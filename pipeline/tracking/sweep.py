"""Sweeps (Hydra multirun): one MLflow parent run per sweep; every job is an MLflow run tagged with the sweep id and
nested under it. Imports no ML framework; mlflow only when tracking is on.

Hydra instantiates `SweepCallback` from `hydra.callbacks.sweep` (conf/config.yaml) in the launching process:
  on_multirun_start  opens the sweep's parent run and picks the sweep id
  on_job_start       runs in the job's own process (also a joblib worker or a Ray worker: Hydra ships the callback
                     object, with its state, inside the job), and hands the sweep id and parent run id to the job
  on_job_end         writes <sweep dir>/<job>/job.json (status, error, objective, run directory)
  on_multirun_end    logs the leaderboard, Pareto PNG and HTML report (pipeline.tracking.compare) to the parent run, prints
                     which jobs failed and closes the parent run

A job that fails raises `JobFailed`, so the launcher records a failed job and the sweeper decides: Hydra's basic sweeper
lets every other job of the batch finish and then exits 1; Optuna marks the trial FAIL and continues while its
`max_failure_rate` allows. When the sweeper raises, Hydra skips on_multirun_end: pipeline.cli.run then calls
`finish_active()` so the parent run is closed (FAILED) and the summary printed all the same.
"""
from __future__ import annotations

import json
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any

from hydra.errors import CompactHydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("pipeline")

ROLE_TAG = "sweep.role"  # parent | job
ID_TAG = "sweep.id"
_job: dict | None = None  # the sweep context of the job running in this process (set by on_job_start)
_active: "SweepCallback | None" = None  # the sweep launched by this process, until it is finished
_started = False  # this process launched a sweep (so Hydra's config composition succeeded)
_preview = False  # --plan: jobs print their plan; the sweep opens no MLflow run and writes no job.json


class JobFailed(CompactHydraException):
    """One job of a sweep failed. Compact: Hydra prints the message without a traceback (the job's log has it)."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code

    def __reduce__(self):  # crosses process boundaries (joblib, Ray)
        return (JobFailed, (str(self), self.exit_code))


class SweepRefused(SystemExit):
    """An invalid sweep, refused in on_multirun_start before any job: Hydra turns a callback's exceptions into
    warnings and goes on, so this leaves as an exit (status 2) that pipeline.cli.run reports with `error`'s text."""

    def __init__(self, error: Exception):
        super().__init__(2)
        self.error = error


def job_context() -> dict | None:
    """{'id', 'parent_run_id', 'tracking_uri', 'job', 'overrides'} in a sweep job; None in a single run."""
    return _job


def active() -> "SweepCallback | None":
    return _active


def started() -> bool:
    return _started


def set_preview(on: bool) -> None:
    global _preview
    _preview = bool(on)


def finish_active(failed: bool, killed: bool = False) -> None:
    """Close the sweep this process launched if Hydra did not (its sweeper raised on a failed job, or a signal
    stopped it: KILLED)."""
    if _active is not None:
        _active.finish(failed=failed, killed=killed)


def claim_dir(path: Path) -> None:
    """Create the sweep's folder, failing if it exists: two sweeps never share one (job.json, multirun.yaml and the
    comparison of one would overwrite the other's). The default name holds the time and a random suffix."""
    from pipeline.core.errors import ConfigError

    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir()
    except FileExistsError:
        raise SweepRefused(ConfigError(
            f"hydra.sweep.dir: {str(path)!r} already exists (another sweep's folder); a sweep writes into a new "
            f"folder only. Leave hydra.sweep.dir at its default (time + random suffix) or name a new folder")) from None
    except OSError as e:
        raise SweepRefused(ConfigError(f"hydra.sweep.dir: cannot create {str(path)!r} ({e.strerror}); choose a "
                                       f"writable folder (paths.outputs=DIR)")) from None


def job_tags(job: dict, uri: str) -> dict[str, str]:
    """Tags of a sweep job's MLflow run; nested under the sweep parent when both log to the same store."""
    tags = {ID_TAG: job["id"], ROLE_TAG: "job", "sweep.job": str(job["job"]),
            "sweep.overrides": " ".join(job["overrides"])}
    if job.get("parent_run_id") and job.get("tracking_uri") == uri:
        tags["mlflow.parentRunId"] = job["parent_run_id"]
    return tags


def search_space_problems(config: DictConfig) -> list[str]:
    """Every search range of an Optuna sweep that Optuna cannot sample (`range(64,8)`, `interval(1,0)`, a choice over
    nothing ...), one sentence each naming the parameter and the fix; [] for another sweeper."""
    sweeper = config.hydra.sweeper
    if "optuna" not in str(sweeper.get("_target_", "")).lower():
        return []
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    # what the sweeper searches: hydra.sweeper.params (as it reads them), then the command line's sweeps
    cli = {}
    for text in config.hydra.overrides.task:
        o = parser.parse_override(text)
        if o.is_sweep_override():
            cli[o.get_key_element()] = (f"{o.get_key_element()} (a sweep on the command line)", text)
    entries = [(f"hydra.sweeper.params.{k}", f"{k!s}={v}") for k, v in (sweeper.get("params") or {}).items()
               if str(k) not in cli]  # a command-line sweep of the same key replaces the config's
    entries += cli.values()
    return [p for p in (range_problem(where, text) for where, text in entries) if p]


def range_problem(where: str, override: str) -> str | None:
    """None if the Optuna sweeper can sample `override` ("name=range(8,64)"), else one sentence starting with `where`
    that says why and how to write it. Uses the sweeper's own parser and distribution factory, so what passes here
    is exactly what the sweeper accepts."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra_plugins.hydra_optuna_sweeper._impl import create_optuna_distribution_from_override

    expr = override.split("=", 1)[1]
    try:
        parsed = OverridesParser.create().parse_override(override)
    except Exception as e:
        reason = next((ln.strip() for ln in str(e).splitlines() if "while evaluating" in ln), str(e).splitlines()[0])
        return (f"{where}: {expr!r} is not a valid search range ({reason}). Write choice(A,B,...), "
                f"range(START,STOP[,STEP]) or interval(LOW,HIGH) (Hydra's override grammar)")
    try:
        create_optuna_distribution_from_override(parsed)
    except Exception as e:
        return (f"{where}: {expr!r} is not a search range Optuna can sample ({str(e).rstrip('.')}). "
                f"{_search_range_fix(parsed.value())}")
    return None


def _search_range_fix(value: Any) -> str:
    from hydra.core.override_parser.types import IntervalSweep, RangeSweep

    if isinstance(value, RangeSweep) and not value.shuffle:
        swap = f", e.g. range({value.stop},{value.start})" if value.start > value.stop else ""
        return f"Use range(START,STOP[,STEP]) with START <= STOP and a STEP > 0{swap}"
    if isinstance(value, IntervalSweep):
        swap = f", e.g. interval({value.end},{value.start})" if value.start > value.end else ""
        log = "; tag(log, interval(...)) also needs LOW > 0" if "log" in value.tags else ""
        return f"Use interval(LOW,HIGH) with LOW <= HIGH{swap}{log}"
    return "List at least one value: choice(A,B,...)"


def _tracking_uri(config: DictConfig) -> str:
    from pipeline.tracking import tracker as tracking

    outputs = Path(os.path.expanduser(str(config.paths.outputs))).resolve()
    return tracking.resolve_uri(config.tracking, outputs)


class SweepCallback(Callback):
    def __init__(self) -> None:
        self.sweep_id: str | None = None
        self.parent_run_id: str | None = None
        self.tracking_uri: str | None = None
        self.experiment_id: str | None = None
        self.sweep_dir: str | None = None
        self.finished = False
        self.preview = False
        self._config: DictConfig | None = None

    def __getstate__(self):  # the launching process's config stays home; jobs only need the ids
        return {**self.__dict__, "_config": None}

    # --- launching process ----------------------------------------------------------------------------------
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _active, _started
        problems = search_space_problems(config)  # before any job runs, and before anything is written
        if problems:
            from pipeline.core.errors import ConfigError

            raise SweepRefused(ConfigError(problems))
        self.preview = _preview
        self.sweep_dir = str(Path(str(config.hydra.sweep.dir)).resolve())
        if not self.preview:
            claim_dir(Path(self.sweep_dir))
        _active, _started = self, True
        self._config = config
        self.sweep_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        overrides = " ".join(OmegaConf.to_container(config.hydra.overrides.task))
        if self.preview:
            log.info("sweep plan: %s (nothing runs and nothing is written)", overrides)
            return
        log.info("sweep %s: %s (jobs write to %s)", self.sweep_id, overrides, self.sweep_dir)
        if not config.tracking.enabled:
            return
        from pipeline.tracking import tracker as tracking

        self.tracking_uri = _tracking_uri(config)
        recipe = config.hydra.runtime.choices.get("recipe") or "sweep"
        experiment = config.tracking.experiment or recipe
        if not config.tracking.experiment and any(o.split("=")[0].lstrip("+~") == "recipe" and "," in o
                                                  for o in OmegaConf.to_container(config.hydra.overrides.task)):
            log.warning("this sweep spans several recipes, each logging to its own experiment; the sweep run is in "
                        "%r. Add tracking.experiment=NAME to keep every job nested under it.", experiment)
        outputs = Path(os.path.expanduser(str(config.paths.outputs))).resolve()
        local = not self.tracking_uri.startswith(("http://", "https://"))
        tracker = tracking.Tracker(self.tracking_uri, experiment, outputs / "mlartifacts" if local else None,
                                   timeout_s=float(config.tracking.timeout_s))
        self.experiment_id = tracker.experiment_id
        self.timeout_s = float(config.tracking.timeout_s)
        from pipeline.core.provenance import command_line

        # tagged with this process, so that the next run closes it (KILLED) if this launcher is killed
        self.parent_run_id = tracker.start_parent(
            f"sweep {self.sweep_id}",
            {ID_TAG: self.sweep_id, ROLE_TAG: "parent", "sweep.overrides": overrides,
             "sweep.dir": self.sweep_dir, "command": command_line(sweep=True),
             "mlflow.note.content": f"Sweep `{command_line(sweep=True)}`: one nested run per job."})
        log.info("MLflow: sweep parent run %s in experiment %s (%s)", self.parent_run_id, experiment,
                 self.tracking_uri)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self.finish(failed=False)

    def finish(self, failed: bool, killed: bool = False) -> None:
        """Summarise the jobs, log the comparison to the parent run and close it (signals held meanwhile, so that a
        second one cannot leave it half closed). Runs once."""
        from pipeline.core import interrupts

        with interrupts.held():
            self._finish(failed, killed)

    def _finish(self, failed: bool, killed: bool) -> None:
        global _active
        if self.finished:
            return
        self.finished = True
        _active = None
        if self.preview:
            return
        jobs = self.job_records()
        bad = [j for j in jobs if j.get("status") != "COMPLETED"]
        log.info("sweep %s: %d job(s) finished, %d failed", self.sweep_id, len(jobs) - len(bad), len(bad))
        for j in bad:
            log.error("  job #%s (%s): %s", j.get("job"), " ".join(j.get("overrides", [])), j.get("error"))
        failed = failed or bool(bad)
        if not self.parent_run_id:
            return
        from mlflow.tracking import MlflowClient

        from pipeline.tracking import tracker as tracking

        client = MlflowClient(self.tracking_uri)
        try:
            from pipeline.tracking import compare

            out = Path(self.sweep_dir) / "compare"
            result = compare.report(client, [self.experiment_id], sweep=self.sweep_id, out_dir=out,
                                    title=f"sweep {self.sweep_id}")
            print(result["table"], flush=True)
            for f in result["files"]:
                client.log_artifact(self.parent_run_id, str(f), artifact_path="compare")
            log.info("sweep comparison: %s", result["html"])
        except Exception as e:  # a report problem must not hide the jobs' results
            log.warning("sweep %s: could not build the comparison report: %s", self.sweep_id, e)
        for k, v in {"jobs": len(jobs), "jobs_failed": len(bad)}.items():
            client.log_metric(self.parent_run_id, k, v)
        tracking.terminate(self.tracking_uri, self.parent_run_id,
                           "KILLED" if killed else "FAILED" if failed else "FINISHED", getattr(self, "timeout_s", 10.0))

    def job_records(self) -> list[dict]:
        """job.json of every job of this sweep that wrote one (all of them when the sweep dir is shared)."""
        out = []
        for p in sorted(Path(self.sweep_dir).glob("*/job.json"), key=lambda p: p.parent.name):
            try:
                out.append(json.loads(p.read_text()))
            except (OSError, ValueError):
                pass
        return sorted(out, key=lambda j: j.get("job", 0))

    # --- job process ----------------------------------------------------------------------------------------
    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _job
        if self.sweep_id is None:  # a single run: nothing to group
            _job = None
            return
        _job = {"id": self.sweep_id, "parent_run_id": self.parent_run_id, "tracking_uri": self.tracking_uri,
                "job": int(config.hydra.job.num), "overrides": list(config.hydra.overrides.task),
                "preview": getattr(self, "preview", False)}

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        global _job
        if self.sweep_id is None or getattr(self, "preview", False):
            _job = None
            return
        from hydra.core.utils import JobStatus

        rec = {"sweep": self.sweep_id, "job": int(config.hydra.job.num),
               "overrides": list(config.hydra.overrides.task),
               "status": job_return.status.name if job_return.status else "UNKNOWN"}
        if job_return.status == JobStatus.COMPLETED:
            rec["objective"] = job_return._return_value
        else:
            rec["error"] = str(job_return._return_value)
        rec.update((_job or {}).get("result", {}))
        try:
            d = Path(str(config.hydra.runtime.output_dir))
            d.mkdir(parents=True, exist_ok=True)
            (d / "job.json").write_text(json.dumps(rec, indent=2, default=str))
        except OSError as e:
            log.warning("could not write job.json: %s", e)
        _job = None
