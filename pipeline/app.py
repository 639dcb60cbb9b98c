"""`run(cfg)`: plan -> run -> report. The Hydra entry point (pipeline/__main__.py) is a thin wrapper around it."""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
import time
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

from omegaconf import DictConfig, OmegaConf

from pipeline import objective, report
from pipeline.artifacts import safe_name
from pipeline.cache import Cache
from pipeline.errors import ConfigError, GateFailed, StageError
from pipeline.plan import build_plan
from pipeline.runner import Runner, check_outputs_writable
from pipeline.stages import discover

log = logging.getLogger("pipeline")
CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
TRACKED_LIBRARIES = ("torch", "tensorflow-cpu", "litert-torch", "ai-edge-litert", "onnx", "onnxruntime", "coremltools",
                     "mlflow", "hydra-core", "omegaconf", "torch-pruning", "scikit-learn", "numpy")


def library_versions() -> dict[str, str]:
    out = {}
    for dist in TRACKED_LIBRARIES:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=CONF_DIR.parent, capture_output=True, text=True,
                              timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def command_line(sweep: dict | bool | None = None) -> str:
    """The command that (re)runs this run. In a sweep job: that job's own overrides (issue 6); sweep=True: the
    sweep's command itself."""
    if isinstance(sweep, dict):
        return "python -m pipeline " + " ".join(sweep["overrides"])
    args = [a for a in sys.argv[1:] if a not in ("-m", "--multirun")]
    return "python -m pipeline " + ("-m " if sweep else "") + " ".join(args)


def _make_run_dir(outputs: Path, recipe: str, device: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    d = outputs / "runs" / recipe / f"{stamp}-{device}-{uuid.uuid4().hex[:6]}"
    d.mkdir(parents=True)
    return d


def _file_logging(run_dir: Path) -> logging.Handler:
    h = logging.FileHandler(run_dir / "pipeline.log")
    h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    h.setLevel(logging.DEBUG)
    logging.getLogger().addHandler(h)
    return h


def _open_tracker(tracking, uri: str, experiment: str, outputs: Path):
    """The MLflow store, or exit 2 naming it: a broken store is refused before any stage runs."""
    local = not uri.startswith(("http://", "https://"))
    try:
        return tracking.Tracker(uri, experiment, outputs / "mlartifacts" if local else None)
    except Exception as e:  # SQLAlchemy/MLflow raise many types; what matters is the store and the fix
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"tracking.uri: cannot open the MLflow store {uri} ({reason[:300]}). Repair or move it away, "
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
    objective.check(cfg, [t.stage for t in plan.producers()])  # issue 6: objective named in the recipe
    recipe, device = plan.recipe, cfg.device.name
    # Both become folder names (outputs/runs/<recipe>/<stamp>-<device>-...): nothing may point outside the run folder.
    for what, name in (("recipe", recipe), ("device.name", device)):
        try:
            safe_name(str(name), what)
        except ValueError as e:
            raise ConfigError(f"{e}") from None
    return cfg, plan


def run(cfg: DictConfig, sweep: dict | None = None, stages: Iterable[type] = ()) -> dict[str, Any]:
    """Run a composed pipeline config. Returns summary.json's content.

    `sweep` (issue 6): the job's sweep context from pipeline.sweep.job_context() in a multirun, else None.

    Raises ConfigError (exit 2) before anything is written, StageError (exit 1) after a stage failed; finished stages
    stay cached either way. Once the MLflow run is open it is always closed: FINISHED, FAILED, or KILLED on Ctrl-C.
    """
    cfg, plan = prepare(cfg, stages)
    recipe, device = plan.recipe, cfg.device.name
    outputs = Path(os.path.expanduser(cfg.paths.outputs)).resolve()
    tracker = None
    mlflow_info: dict[str, Any] = {"tracking_uri": None, "experiment": None, "run_id": None}
    if cfg.tracking.enabled:
        from pipeline import tracking

        uri = tracking.resolve_uri(cfg.tracking, outputs)  # a dead server is refused before anything is written
    check_outputs_writable(outputs)
    if cfg.tracking.enabled:
        tracker = _open_tracker(tracking, uri, cfg.tracking.experiment or recipe, outputs)

    run_dir, handler = _start_run_dir(outputs, recipe, device, cfg)
    log.info("run directory: %s", run_dir)
    nocache = run_dir / ".nocache"
    runner = None
    status, error, exc = "success", None, None
    try:
        if tracker:
            versions = library_versions()
            tags = {"recipe": recipe, "device": device, "device.runtime": cfg.device.runtime,
                    "git.commit": git_commit(), "run_dir": str(run_dir), "command": command_line(sweep),
                    **{f"lib.{k}": v for k, v in versions.items()}}
            if sweep:  # issue 6: a sweep job is tagged with its sweep and nested under the sweep's parent run
                from pipeline import sweep as sweep_mod

                tags.update(sweep_mod.job_tags(sweep, tracker.uri))
            run_id = tracker.start(f"{recipe}@{device}", OmegaConf.to_container(cfg), tags)
            mlflow_info = {"tracking_uri": tracker.uri, "experiment": tracker.experiment, "run_id": run_id}
            log.info("MLflow: %s  experiment=%s  run=%s", tracker.uri, tracker.experiment, run_id)
            tracker.log_files([run_dir / "config.yaml"])
            try:
                tracker.close_orphans()
            except Exception as e:  # housekeeping only
                log.debug("could not close orphaned MLflow runs: %s", e)
        cache = Cache(outputs / "cache") if cfg.cache.enabled else Cache(nocache)
        if cfg.cache.enabled:
            cache.clean_tmp()
        runner = Runner(plan, cfg, cache, run_dir, tracker, use_cache=bool(cfg.cache.enabled))
        runner.run()
    except StageError as e:
        status, error, exc = "failed", str(e), e
    except KeyboardInterrupt as e:
        status, error, exc = "killed", "interrupted (SIGINT or SIGTERM)", e
    except Exception as e:  # not a stage's own failure (e.g. the tracking store went away): still close the run
        where = _save_traceback(run_dir, "pipeline.traceback.txt")
        log.debug("unexpected error", exc_info=True)
        status, error = "failed", f"{type(e).__name__}: {e} (traceback: {where})"
        exc = StageError(f"the run failed outside any stage: {error}")
        exc.__cause__ = e
    finally:
        if not cfg.cache.enabled:
            shutil.rmtree(nocache, ignore_errors=True)

    records = list(runner.records.values()) if runner else []
    summary = report.build_summary(recipe=recipe, device=cfg.device, status=status, mlflow=mlflow_info,
                                   records=records, gate_cfg=cfg.gate, run_dir=run_dir, error=error)
    summary["objective"] = objective.summarize(summary, cfg)  # issue 6: what sweepers, registry and compare rank by
    if tracker and tracker.run_id and status == "success" and cfg.registry.enabled:
        from pipeline import registry

        summary["registry"] = registry.register(tracker, summary, cfg, outputs)
    path = None
    try:
        try:
            path = report.write_summary(run_dir, summary)
            print(report.table(summary), flush=True)
        except OSError as e:  # a full disk: the status still reaches MLflow and the console
            log.error("could not write %s: %s", run_dir / "summary.json", e)
            if exc is None:
                status, error = "failed", f"could not write summary.json: {e.strerror}"
                exc = StageError(f"{error}; free space under {outputs} or choose paths.outputs=DIR, then re-run")
        if tracker and tracker.run_id:
            try:
                tracker.log_metrics(tracker.run_id, {**report.headline_metrics(summary),  # + issue 6: objective.<metric>
                                                     **{f"objective.{k}": v for k, v in summary["objective"]["values"].items()}})
                # each format with the runtime that ran it (or why nothing ran it here), searchable as tags.artifact.<name>
                tracker.set_tags({f"artifact.{a['name']}": f"{a['format']} {a['precision']}: "
                                  f"{a.get('runtime') or a.get('not_runnable') or 'not run'}" for a in summary["artifacts"]})
                # issue 5: each artifact's gate verdict as a tag (the metric <artifact>.gate_pass is 1/0)
                tracker.set_tags({f"gate.{a['name']}": ("pass" if a["gate"]["pass"] else "fail: " + "; ".join(a["gate"]["failed"]))[:5000]
                                  for a in summary["artifacts"] if a.get("gate")})
                tracker.log_files([p for p in (path, run_dir / "pipeline.log") if p is not None])
            except Exception as e:  # keep going: closing the run with its status matters more than these files
                log.warning("could not log the summary to MLflow: %s", e)
    finally:
        if tracker and tracker.run_id:  # runs even on a second Ctrl-C here
            with contextlib.suppress(Exception):
                tracker.end({"success": "FINISHED", "failed": "FAILED", "killed": "KILLED"}[status])
        logging.getLogger().removeHandler(handler)
        handler.close()
    if exc is not None:
        done = sum(1 for r in records if r.status in ("ran", "reused"))
        log.error("%s\n%d finished stage(s) are cached. Fix the problem and run the same command again to resume:\n"
                  "  %s\nsummary: %s", error, done, command_line(sweep), path or "(not written)")
        raise exc
    gate = summary.get("gate") or {}
    if cfg.gate.enforce and gate.get("pass") is False:  # issue 5: an enforced budget was missed
        msg = (f"gate: artifact {gate['artifact']!r} misses its budget(s) on {cfg.device.name}: "
               + "; ".join(gate["failed"]) + f"\nsummary: {path}")
        log.error(msg)
        raise GateFailed(msg)
    log.info("summary: %s", path)
    return summary
