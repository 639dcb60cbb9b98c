"""MLflow Model Registry: over-the-air versioning and gradual rollout in MLflow's own terms. mlflow imported lazily.

One registered model per recipe and device (`<recipe>-<device>`, or `registry.name`). After a successful run whose
final artifact passes its gates:
  - the artifact becomes a new model version whose source is the artifact logged by its stage's nested run (an MLflow
    server requires the version's run to hold its source), tagged with the objective values and the pipeline run id
    (`pipeline_run_id`: the run whose metrics it was judged on);
  - alias `candidate` moves to it (the newest version that may be rolled out);
  - alias `champion` moves to it only if it strictly beats the current champion on the recipe's first objective
    metric (`objective.metrics[0]`); the first passing version becomes champion.
The champion check-and-move is serialised with a file lock under paths.outputs (two jobs of one sweep may finish at
once); jobs on several machines share that lock only if they share paths.outputs.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from pipeline.report import objective
from pipeline.report.schema import Summary
from pipeline.core.cache import Cache
from pipeline.tracking.tracker import LOGGED_BY_TAG

log = logging.getLogger("pipeline")
CANDIDATE, CHAMPION = "candidate", "champion"


def model_name(cfg: Any, recipe: str) -> str:
    return cfg.registry.name or f"{recipe}-{cfg.device.name}"


def _stage_run_id(client, tracker, stage: str) -> str | None:
    runs = client.search_runs([tracker.experiment_id],
                              filter_string=f"tags.mlflow.parentRunId = '{tracker.run_id}' and "
                                            f"attributes.run_name = '{stage}'", max_results=1)
    if not runs:
        return None
    # a reused stage points at the run that logged its files (the same bytes, same cache key)
    return runs[0].data.tags.get(LOGGED_BY_TAG) or runs[0].info.run_id


def _version_value(mv, metric: str) -> float | None:
    v = (mv.tags or {}).get(f"objective.{metric}")
    try:
        return float(v) if v not in (None, "", "None") else None
    except ValueError:
        return None


def register(tracker: Any, summary: Summary, cfg: Any, outputs: Path) -> dict:
    """Register the run's final artifact if it passes its gates; returns what happened (goes into summary.json).
    A registry error is reported, not raised: the run itself succeeded and its artifacts are logged."""
    try:
        return _register(tracker, summary, cfg, outputs)
    except Exception as e:  # e.g. a server without a registry (file store): say so, keep the run
        log.warning("model registry: not registered (%s: %s)", type(e).__name__, e)
        return {"registered": False, "reason": f"{type(e).__name__}: {e}"}


def _register(tracker: Any, summary: Summary, cfg: Any, outputs: Path) -> dict:
    from mlflow.exceptions import MlflowException

    client = tracker.client
    name = model_name(cfg, summary.recipe)
    row = summary.judged
    if row is None:
        return {"registered": False, "model": name, "reason": "the run produced no model"}
    if summary.release is not None and not summary.release.passed:  # the release gate found a regression
        why = f"release gate against {summary.release.against}: {summary.release.headline}"
        log.info("model registry: %s not registered: %s", row.name, why)
        return {"registered": False, "model": name, "artifact": row.name, "reason": why}
    if not row.verdict.ok:  # the judge's verdict, nothing re-judged here
        why = f"verdict {row.verdict.status}: " + "; ".join(row.verdict.problems)
        log.info("model registry: %s not registered: %s", row.name, why)
        return {"registered": False, "model": name, "artifact": row.name, "reason": why}
    stage_run = _stage_run_id(client, tracker, row.stage)
    if stage_run is None:
        return {"registered": False, "model": name, "reason": f"no MLflow run holds the artifact of {row.stage!r}"}
    source = client.get_run(stage_run).info.artifact_uri.rstrip("/") + "/" + row.stage
    metrics = list(cfg.objective.metrics)
    values = summary.objective["values"]
    try:
        client.create_registered_model(name, tags={"recipe": summary.recipe, "device": cfg.device.name},
                                       description=f"{summary.recipe} for {cfg.device.display_name}")
    except MlflowException as e:
        if "already exists" not in str(e).lower() and getattr(e, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
            raise
    tags = {"recipe": summary.recipe, "device": cfg.device.name, "artifact": row.name, "format": row.format,
            "precision": row.precision, "cache_key": row.cache_key,
            "objective.metrics": ",".join(metrics), **{f"objective.{m}": str(values.get(m)) for m in metrics}}
    if summary.mlflow.get("run_id"):
        tags["pipeline_run_id"] = summary.mlflow["run_id"]
    mv = client.create_model_version(name, source, run_id=stage_run, tags=tags,
                                     description=f"{row.name} ({row.format} {row.precision}) from run "
                                                 f"{tracker.run_id}")
    version = str(mv.version)
    primary = metrics[0]
    lock_key = "registry-" + re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    with Cache(outputs / "cache").lock(lock_key):  # jobs of one sweep may register at once: move aliases in turn
        # `candidate` only moves forward: a slower job registering an older version must not pull it back.
        try:
            cand = int(client.get_model_version_by_alias(name, CANDIDATE).version)
        except MlflowException:
            cand = 0
        if int(version) > cand:
            client.set_registered_model_alias(name, CANDIDATE, version)
        try:
            champ = client.get_model_version_by_alias(name, CHAMPION)
        except MlflowException:
            champ = None
        old = _version_value(champ, primary) if champ else None
        new = values.get(primary)
        if champ is None or objective.better(primary, new, old):
            client.set_registered_model_alias(name, CHAMPION, version)
            moved = True
            why = ("first passing version" if champ is None else
                   f"{primary} {new:.4g} beats champion v{champ.version} ({old if old is None else format(old, '.4g')})")
        else:
            moved = False
            why = (f"{primary} {new if new is None else format(new, '.4g')} does not beat champion v{champ.version} "
                   f"({old if old is None else format(old, '.4g')})")
    aliases = [CANDIDATE] + ([CHAMPION] if moved else [])
    log.info("model registry: %s v%s (%s) -> %s; %s", name, version, row.name, ", ".join(aliases), why)
    tracker.set_tags({"registry.model": name, "registry.version": version, "registry.aliases": ",".join(aliases)})
    return {"registered": True, "model": name, "version": version, "artifact": row.name, "aliases": aliases,
            "champion_moved": moved, "previous_champion": str(champ.version) if moved and champ else None,
            "reason": why}
