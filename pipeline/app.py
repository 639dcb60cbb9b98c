"""`run(cfg)`: plan -> run -> report. The Hydra entry point (pipeline/__main__.py) is a thin wrapper around it."""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from pipeline import report
from pipeline.cache import Cache
from pipeline.errors import ConfigError, GateFailed, StageError
from pipeline.plan import build_plan
from pipeline.runner import Runner, check_outputs_writable

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


def command_line() -> str:
    args = [a for a in sys.argv[1:] if a not in ("-m", "--multirun")]
    return "python -m pipeline " + " ".join(args)


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


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run a composed pipeline config. Returns summary.json's content.

    Raises ConfigError (exit 2) before anything is written, StageError (exit 1) after a stage failed; finished stages
    stay cached either way.
    """
    cfg = OmegaConf.create({k: v for k, v in cfg.items() if k != "hydra"}) if "hydra" in cfg else cfg
    try:
        OmegaConf.resolve(cfg)
    except Exception as e:  # an interpolation that points nowhere
        raise ConfigError(f"the configuration does not resolve: {e}") from e
    plan = build_plan(cfg)
    recipe, device = plan.recipe, cfg.device.name
    outputs = Path(os.path.expanduser(cfg.paths.outputs)).resolve()
    tracker = None
    mlflow_info: dict[str, Any] = {"tracking_uri": None, "experiment": None, "run_id": None}
    if cfg.tracking.enabled:
        from pipeline import tracking

        uri = tracking.resolve_uri(cfg.tracking, outputs)  # a dead server is refused before anything is written
    check_outputs_writable(outputs)
    if cfg.tracking.enabled:
        local = not uri.startswith(("http://", "https://"))
        experiment = cfg.tracking.experiment or recipe
        tracker = tracking.Tracker(uri, experiment, outputs / "mlartifacts" if local else None)

    run_dir = _make_run_dir(outputs, recipe, device)
    handler = _file_logging(run_dir)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    log.info("run directory: %s", run_dir)
    if tracker:
        versions = library_versions()
        tags = {"recipe": recipe, "device": device, "device.runtime": cfg.device.runtime, "git.commit": git_commit(),
                "run_dir": str(run_dir), "command": command_line(), **{f"lib.{k}": v for k, v in versions.items()}}
        if os.environ.get("PIPELINE_SWEEP_ID"):
            tags["sweep.id"] = os.environ["PIPELINE_SWEEP_ID"]
        run_id = tracker.start(f"{recipe}@{device}", OmegaConf.to_container(cfg), tags)
        tracker.log_files([run_dir / "config.yaml"])
        mlflow_info = {"tracking_uri": tracker.uri, "experiment": tracker.experiment, "run_id": run_id}
        log.info("MLflow: %s  experiment=%s  run=%s", tracker.uri, tracker.experiment, run_id)

    nocache = run_dir / ".nocache"
    cache = Cache(outputs / "cache") if cfg.cache.enabled else Cache(nocache)
    if cfg.cache.enabled:
        cache.clean_tmp()
    runner = Runner(plan, cfg, cache, run_dir, tracker, use_cache=bool(cfg.cache.enabled))
    status, error, exc = "success", None, None
    try:
        runner.run()
    except StageError as e:
        status, error, exc = "failed", str(e), e
    except KeyboardInterrupt as e:
        status, error, exc = "killed", "interrupted (SIGINT)", e
    finally:
        if not cfg.cache.enabled:
            shutil.rmtree(nocache, ignore_errors=True)

    summary = report.build_summary(recipe=recipe, device=cfg.device, status=status, mlflow=mlflow_info,
                                   records=list(runner.records.values()), gate_cfg=cfg.gate, run_dir=run_dir,
                                   error=error)
    path = report.write_summary(run_dir, summary)
    print(report.table(summary), flush=True)
    if tracker:
        tracker.log_metrics(tracker.run_id, report.headline_metrics(summary))
        # each format with the runtime that ran it (or why nothing ran it here), searchable as tags.artifact.<name>
        tracker.set_tags({f"artifact.{a['name']}": f"{a['format']} {a['precision']}: "
                          f"{a.get('runtime') or a.get('not_runnable') or 'not run'}" for a in summary["artifacts"]})
        # issue 5: each artifact's gate verdict as a tag (the metric <artifact>.gate_pass is 1/0)
        tracker.set_tags({f"gate.{a['name']}": ("pass" if a["gate"]["pass"] else "fail: " + "; ".join(a["gate"]["failed"]))[:5000]
                          for a in summary["artifacts"] if a.get("gate")})
        tracker.log_files([path, run_dir / "pipeline.log"])
        tracker.end({"success": "FINISHED", "failed": "FAILED", "killed": "KILLED"}[status])
    logging.getLogger().removeHandler(handler)
    handler.close()
    if exc is not None:
        done = sum(1 for r in runner.records.values() if r.status in ("ran", "reused"))
        log.error("%s\n%d finished stage(s) are cached. Fix the problem and run the same command again to resume:\n"
                  "  %s\nsummary: %s", error, done, command_line(), path)
        raise exc
    gate = summary.get("gate") or {}
    if cfg.gate.enforce and gate.get("pass") is False:  # issue 5: an enforced budget was missed
        msg = (f"gate: artifact {gate['artifact']!r} misses its budget(s) on {cfg.device.name}: "
               + "; ".join(gate["failed"]) + f"\nsummary: {path}")
        log.error(msg)
        raise GateFailed(msg)
    log.info("summary: %s", path)
    return summary
