"""`run(cfg)`: plan -> run -> report. The Hydra entry point (pipeline/cli/run.py) is a thin wrapper around it."""
from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import time
import uuid
from pathlib import Path
from typing import Any, Iterable

from omegaconf import DictConfig, OmegaConf

from pipeline.core import console, interrupts
from pipeline.core.artifacts import safe_name
from pipeline.core.cache import Cache
from pipeline.core.errors import ConfigError, GateFailed, PipelineError, StageError
from pipeline.core.events import Events, RunInfo
from pipeline.core.plan import build_plan
from pipeline.core.provenance import command_line, overrides
from pipeline.core.runner import Runner, check_outputs_writable
from pipeline.report import objective
from pipeline.report.schema import Summary
from pipeline.report.summary import build_summary, write_summary
from pipeline.stages import discover

log = logging.getLogger("pipeline")


def _make_run_dir(outputs: Path, recipe: str, device: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    d = outputs / "runs" / recipe / f"{stamp}-{device}-{uuid.uuid4().hex[:8]}"  # new per run: mkdir fails on a clash
    d.mkdir(parents=True)
    return d


def cache_root(cfg: DictConfig, outputs: Path) -> Path:
    """cache.dir, or the outputs folder's own cache."""
    d = cfg.cache.get("dir")
    return Path(os.path.expanduser(str(d))).resolve() if d else outputs / "cache"


class _RunLog(logging.FileHandler):
    """pipeline.log. A write that fails (its disk filled up) is said once, not as logging's traceback per line."""

    failed = False

    def handleError(self, record: logging.LogRecord) -> None:
        if not self.failed:
            self.failed = True
            import sys

            err = sys.exc_info()[1]
            sys.stderr.write(f"warning: {self.baseFilename} cannot be written ({getattr(err, 'strerror', None) or err})"
                             f"; it misses the lines from here on, the console keeps its own\n")


def link_latest(outputs: Path, run_dir: Path) -> None:
    """Point <outputs>/latest at the newest run folder (a relative symlink, replaced in one rename); best effort."""
    link = outputs / "latest"
    tmp = outputs / f".latest.{os.getpid()}.{uuid.uuid4().hex[:6]}"
    try:
        if link.exists() and not link.is_symlink():  # the user's own file or folder: leave it alone
            return
        os.symlink(os.path.relpath(run_dir, outputs), tmp)
        os.replace(tmp, link)
    except OSError as e:  # e.g. a filesystem without symlinks
        log.debug("could not link %s: %s", link, e)
        with contextlib.suppress(OSError):
            tmp.unlink()


def _file_logging(run_dir: Path) -> logging.Handler:
    h = _RunLog(run_dir / "pipeline.log")
    h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    h.setLevel(logging.DEBUG)
    logging.getLogger().addHandler(h)
    return h


def _open_tracker(tracking, uri: str, experiment: str, outputs: Path, timeout_s: float):
    """The MLflow store, or exit 2 naming it: a broken store is refused before any stage runs."""
    local = not uri.startswith(("http://", "https://"))
    try:
        return tracking.Tracker(uri, experiment, outputs / "mlartifacts" if local else None, timeout_s=timeout_s)
    except PipelineError:  # a fault the tracker already named with its fix (a locked store, a full disk, a deadline)
        raise
    except Exception as e:  # SQLAlchemy/MLflow raise many types; what matters is the store and the fix
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"tracking.uri: cannot open the MLflow store {tracking.shown(uri)} ({reason[:300]}). Repair or move it away, "
                          f"point tracking.uri at another store, or run with tracking=none.") from e


def _start_run_dir(outputs: Path, recipe: str, device: str, cfg: DictConfig) -> tuple[Path, logging.Handler]:
    """Make the run directory with its log and resolved config; on failure (a full disk) remove what was made."""
    run_dir, handler = None, None
    try:
        run_dir = _make_run_dir(outputs, recipe, device)
        handler = _file_logging(run_dir)
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
        return run_dir, handler
    except OSError as e:
        if handler is not None:
            logging.getLogger().removeHandler(handler)
            handler.close()
        if run_dir is not None:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise ConfigError(f"paths.outputs: cannot write the run directory under {str(outputs)!r} ({e.strerror}); free "
                          f"space there or choose another folder with paths.outputs=DIR") from e


def _save_traceback(run_dir: Path, name: str) -> str:
    """Keep the traceback of an unexpected error in the run directory (not on the console); returns where."""
    import traceback

    try:
        (run_dir / "logs").mkdir(exist_ok=True)
        (run_dir / "logs" / name).write_text(traceback.format_exc())
        return str(run_dir / "logs" / name)
    except OSError:
        return "pipeline.log"


def prepare(cfg: DictConfig, stages: Iterable[type] = ()) -> tuple[DictConfig, Any]:
    """Resolve and validate a composed config and plan it; writes nothing. Raises ConfigError (exit 2) naming every
    problem, never anything else (tests/reliability/test_property_plan.py checks that with random configs).
    `stages`: stage classes to plan with besides the built-in and plug-in types (tests hand in their stubs)."""
    try:
        if "hydra" in cfg:  # (items_ex without resolving: a broken interpolation is reported just below)
            cfg = OmegaConf.create({k: v for k, v in cfg.items_ex(resolve=False) if k != "hydra"})
        OmegaConf.resolve(cfg)
    except Exception as e:  # an interpolation that points nowhere
        raise ConfigError(f"the configuration does not resolve: {e}") from e
    plan = build_plan(cfg, discover(extra=stages))
    objective.check(cfg, [t.stage for t in plan.producers()])
    _check_release_gate(cfg)
    recipe, device = plan.recipe, cfg.device.name
    # Both become folder names (outputs/runs/<recipe>/<stamp>-<device>-...): nothing may point outside the run folder.
    for what, name in (("recipe", recipe), ("device.name", device)):
        try:
            safe_name(str(name), what)
        except ValueError as e:
            raise ConfigError(f"{e}") from None
    registered = cfg.registry.name or f"{recipe}-{device}"  # searched for in MLflow filter strings, quoted
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9 ._+-]*", str(registered)):
        raise ConfigError(f"registry.name: {str(registered)!r} cannot name a registered model here: use letters, "
                          f"digits, spaces and . _ + - (set registry.name=NAME)")
    return cfg, plan


def _check_release_gate(cfg: DictConfig) -> None:
    against = cfg.gate.get("against")
    if against is None:
        return
    if not (str(against) in ("champion", "candidate") or str(against).isdigit()):
        raise ConfigError(f"gate.against: {against!r} is not a registry version; use champion, candidate or a "
                          f"version number")
    if not (cfg.tracking.enabled and cfg.registry.enabled):
        raise ConfigError("gate.against: the release gate compares with the MLflow model registry, and this run has "
                          f"{'tracking' if not cfg.tracking.enabled else 'the registry'} off; drop tracking=none / "
                          f"registry.enabled=false, or gate.against")


def _listeners(cfg: DictConfig, tracker) -> list:
    from pipeline.listeners import (CardListener, ConsoleListener, MeasurementListener, MlflowListener,
                                    RegistryListener)

    out = [MeasurementListener(), CardListener()]
    if tracker:
        out += [MlflowListener(tracker), RegistryListener(tracker)]  # (the registry says when it is disabled)
    return [*out, ConsoleListener()]


def _execute(plan, cfg: DictConfig, outputs: Path, run_dir: Path, events: Events) -> tuple[str, str | None, Any, list]:
    """Run the plan; returns (status, error, the exception to raise after reporting, task records)."""
    nocache = run_dir / ".nocache"
    runner = None
    status, error, exc = "success", None, None
    try:
        with interrupts.allowed():  # (a signal that came while the run folder was made acts here)
            events.run_started()
            cache = Cache(cache_root(cfg, outputs)) if cfg.cache.enabled else Cache(nocache)
            if cfg.cache.enabled:
                cache.clean_tmp()
            runner = Runner(plan, cfg, cache, run_dir, events, use_cache=bool(cfg.cache.enabled))
            runner.run()
    except StageError as e:
        status, error, exc = "failed", str(e), e
    except KeyboardInterrupt as e:
        where = next((f"while stage '{r.name}' ran" for r in (runner.records.values() if runner else [])
                      if r.status == "interrupted"), "before the first stage" if runner is None else "between stages")
        status, exc = "killed", e
        error = f"interrupted by {interrupts.name(getattr(e, 'signum', signal.SIGINT))} {where}"
    except Exception as e:  # not a stage's own failure (e.g. the tracking store went away): still close the run
        where = _save_traceback(run_dir, "pipeline.traceback.txt")
        log.debug("unexpected error", exc_info=True)
        status, error = "failed", f"{type(e).__name__}: {e} (traceback: {where})"
        exc = StageError(f"the run failed outside any stage: {error}")
        exc.__cause__ = e
    finally:
        if not cfg.cache.enabled:
            shutil.rmtree(nocache, ignore_errors=True)
    return status, error, exc, list(runner.records.values()) if runner else []


def run(cfg: DictConfig, sweep: dict | None = None, stages: Iterable[type] = (), last: bool = False) -> Summary:
    """Run a composed pipeline config. Returns the summary (summary.json's content, typed).

    `sweep`: the job's sweep context from pipeline.sweep.job_context() in a multirun, else None. `stages`: stage
    classes to plan with besides the built-in and plug-in types. `last`: the process ends after this run (the command
    line), so signals stay held once the run is recorded (pipeline.interrupts.settle).

    Raises ConfigError (exit 2) before anything is written, StageError (exit 1) after a stage failed; finished stages
    stay cached either way. Once the MLflow run is open it is always closed: FINISHED, FAILED, or KILLED on a signal
    (pipeline.core.interrupts: SIGINT, SIGTERM or SIGHUP at any moment ends the run whole, never half recorded).
    """
    cfg, plan = prepare(cfg, stages)
    console.set_verbose(cfg.verbose)  # verbose=true: every library's output on the console, as printed
    recipe, device = plan.recipe, cfg.device.name
    outputs = Path(os.path.expanduser(cfg.paths.outputs)).resolve()
    tracker = None
    if cfg.tracking.enabled:
        from pipeline.tracking import tracker as tracking

        uri = tracking.resolve_uri(cfg.tracking, outputs)  # a dead server is refused before anything is written
    check_outputs_writable(outputs, cfg.paths.min_free_mb)
    if cfg.tracking.enabled:
        with console.quiet():  # mlflow's import installs its own stderr handler, its first use creates the tables
            tracker = _open_tracker(tracking, uri, cfg.tracking.experiment or recipe, outputs, cfg.tracking.timeout_s)

    with interrupts.held():  # from here to the closed MLflow run, signals act only where the run can stop whole
        run_dir, handler = _start_run_dir(outputs, recipe, device, cfg)
        link_latest(outputs, run_dir)
        folded = console.folded()
        try:
            log.info("run directory: %s", run_dir)
            info = RunInfo(recipe, device, cfg, run_dir, outputs, command_line(sweep), sweep, overrides(sweep))
            events = Events(info, _listeners(cfg, tracker))
            status, error, exc, records = _execute(plan, cfg, outputs, run_dir, events)
            summary, path, status, error, exc = _report(cfg, info, events, records, status, error, exc, tracker)
            if console.folded() > folded:
                log.warning("%d error record(s) of a library, with tracebacks, went to %s only",
                            console.folded() - folded, run_dir / "pipeline.log")
            if exc is not None:
                done = sum(1 for r in records if r.status in ("ran", "reused"))
                log.error("%s\n%d finished stage(s) are cached. Fix the problem and run the same command again to "
                          "resume:\n  %s\nsummary: %s", error, done, info.command, path or "(not written)")
                exc.reported = True
                raise exc
            _raise_gate_failure(summary, cfg, path)
            return summary
        finally:  # after the error lines: pipeline.log keeps them too
            logging.getLogger().removeHandler(handler)
            handler.close()
            if last:
                interrupts.settle()


def _summary(cfg: DictConfig, info: RunInfo, records: list, status: str, error: str | None, tracker) -> Summary:
    summary = build_summary(recipe=info.recipe, device=cfg.device, status=status, mlflow=info.mlflow,
                            records=records, gate_cfg=cfg.gate, run_dir=info.run_dir, error=error,
                            task=str(cfg.get("task") or "classification"))
    summary.objective = objective.summarize(summary, cfg)  # what sweepers, the registry and compare rank by
    if cfg.gate.against and status == "success" and tracker is not None:
        summary.release = _release_gate(summary, cfg, tracker)
    return summary


def _report(cfg: DictConfig, info: RunInfo, events: Events, records: list, status: str, error: str | None, exc,
            tracker):
    """Summarise, log and close the run; returns (summary, summary.json path or None, status, error, exception).

    Called with signals held. Logging the results to MLflow may be interrupted: the run then ends KILLED with a
    summary saying so, and nothing is registered. From registering on (registry, summary.json, closing the MLflow run)
    the run is recorded whole first, and a signal that arrived meanwhile is reported after."""
    summary, path, closed = None, None, False
    try:
        try:
            with interrupts.allowed():
                summary = _summary(cfg, info, records, status, error, tracker)
                events.summary_ready(summary)  # (MLflow: headline metrics, tags, the card, a LoggedModel per artifact)
        except KeyboardInterrupt as e:
            if status != "killed":  # (a second signal while a killed run is logged keeps the first one's reason)
                status, exc = "killed", e
                error = (f"interrupted by {interrupts.name(getattr(e, 'signum', signal.SIGINT))} after the last "
                         f"stage, while the results were being logged: the run is recorded as killed and nothing "
                         f"was registered")
            summary = _summary(cfg, info, records, status, error, tracker)
        with interrupts.held() as late:
            try:
                if status == "success":
                    events.run_succeeded(summary)  # (the registry registers the judged artifact, adds its outcome)
                try:
                    path = write_summary(info.run_dir, summary)
                except OSError as e:  # a full disk: the status still reaches MLflow and the console
                    log.error("could not write %s: %s", info.run_dir / "summary.json", e)
                    if exc is None:
                        status, error = "failed", f"could not write summary.json: {e.strerror}"
                        exc = StageError(f"{error}; free space under {info.outputs} or choose paths.outputs=DIR, "
                                         f"then re-run")
                events.run_finished(summary, path)  # (the console's table, summary path and deployable artifact)
            finally:
                closed = True
                events.run_closed(status)
    finally:
        if not closed:  # an unexpected error while summarising: the MLflow run still ends
            events.run_closed("failed" if status == "success" else status)
    if late["signal"] is not None:
        log.warning("%s arrived while the finished run was being recorded: it was recorded completely first "
                    "(status %s%s)", interrupts.name(late["signal"]), status, f", summary {path}" if path else "")
    return summary, path, status, error, exc


def _raise_gate_failure(summary: Summary, cfg: DictConfig, path: Path | None) -> None:
    """Exit 1 (GateFailed) on a regression against the registry version (gate.against), or when the judged artifact
    is not a pass and gate.enforce is set."""
    rel, gate = summary.release, summary.gate
    msg = None
    if rel is not None and not rel.passed:
        msg = f"release gate against {rel.against}: {rel.headline}\nreport: {rel.report}"
    elif cfg.gate.enforce and gate is not None and not gate.passed:
        msg = (f"gate: artifact {gate.artifact!r} is not a pass on {cfg.device.name} ({gate.status}): "
               + "; ".join(gate.failed) + f"\nsummary: {path}")
    if msg:
        log.error(msg)
        raise GateFailed(msg)


def _release_gate(summary: Summary, cfg: DictConfig, tracker):
    """gate.against: the release gate before the registry sees the model (pipeline.tracking.gate); its own failure
    to compare is reported as n/a, never as a pass of the model or a crash of the finished run."""
    from pipeline.report.schema import Release
    from pipeline.tracking import gate as release_gate

    try:
        verdict = release_gate.judge_run(summary, cfg, tracker.client, str(cfg.gate.against))
    except Exception as e:
        log.warning("release gate: could not compare with %s: %s", cfg.gate.against, e, exc_info=log.isEnabledFor(
            logging.DEBUG))
        return Release(against=str(cfg.gate.against), status="n/a", headline=f"not compared: {e}")
    log.info("release gate against %s: %s (%s)", verdict.against, verdict.headline, verdict.report)
    return verdict


def preview(cfg: DictConfig, stages: Iterable[type] = ()) -> list[dict]:
    """The plan as it would run: each task's resolved stage type, the format it makes, and whether the cache will
    reuse it (and if not, why). Runs nothing and writes nothing; prints a table and returns its rows."""
    cfg, plan = prepare(cfg, stages)
    outputs = Path(os.path.expanduser(cfg.paths.outputs)).resolve()
    cache = Cache(cache_root(cfg, outputs))
    rows = Runner(plan, cfg, cache, outputs, None, use_cache=bool(cfg.cache.enabled)).preview()
    from pipeline.report.table import render

    head = ["task", "type", "inputs", "makes", "will", "why"]
    cells = [[r["task"], r["type"], ",".join(r["inputs"]) or "-",
              "/".join(r["format"]) if isinstance(r["format"], (list, tuple)) else (r["format"] or "-"),
              r["will"], r["reason"]] for r in rows]
    print(f"plan for recipe {plan.recipe!r} on device {cfg.device.name!r} (nothing runs; drop --plan to run it):")
    print("\n".join(render(head, cells, wrap=("why", "inputs"), drop_empty=False)), flush=True)
    print(time_estimate(rows), flush=True)
    return rows


def time_estimate(rows: list[dict]) -> str:
    """One line: how long the tasks that will run took the last time this cache ran them."""
    todo = [r for r in rows if r["will"] == "run"]
    if not todo:
        return "estimated time: seconds (every task is reused from the cache)"
    known = [r["last_seconds"] for r in todo if r.get("last_seconds") is not None]
    unknown = [r["task"] for r in todo if r.get("last_seconds") is None]
    if not known:
        return f"estimated time: unknown ({len(todo)} task(s) to run, none of them ran before with this cache)"
    text = (f"estimated time: about {console.duration(sum(known))} for {len(known)} of the {len(todo)} task(s) to "
            f"run (their last durations in this cache, on this machine)")
    return text + (f"; never ran here: {', '.join(unknown)}" if unknown else "")
