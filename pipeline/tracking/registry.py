"""MLflow Model Registry: over-the-air versioning and gradual rollout in MLflow's own terms. mlflow imported lazily.

One registered model per recipe and device (`<recipe>-<device>`, or `registry.name`). After a successful run whose
final artifact passes its gates and beats chance for its task (pipeline.tasks.chance):
  - the same file again (same sha256, or same cache key) is not registered twice: its version is reused ("same as
    vN") and the run's LoggedModel is linked to it;
  - the artifact becomes a new model version whose source is the artifact logged by its stage's nested run (an MLflow
    server requires the version's run to hold its source), tagged with the objective values and the pipeline run id
    (`pipeline_run_id`: the run whose metrics it was judged on);
  - alias `candidate` moves to it (the newest version that may be rolled out);
  - alias `champion` moves to it only if it strictly beats the current champion on the recipe's first objective
    metric (`objective.metrics[0]`); the first passing version becomes champion. A version whose task metric was not
    measured (Core ML on Linux) never becomes champion: it cannot be shown to beat chance;
  - the run's LoggedModel of that artifact is tagged with the version (MLflow's `mlflow.modelVersions`).
Recipes may turn registering off (`registry.enabled: false`, e.g. the smoke test tiny_int8).
The champion check-and-move is serialised with a file lock under paths.outputs (two jobs of one sweep may finish at
once); jobs on several machines share that lock only if they share paths.outputs.
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from pipeline.core.cache import Cache
from pipeline.report import objective
from pipeline.report.schema import ArtifactRow, Summary
from pipeline.tracking.tracker import LOGGED_BY_TAG

log = logging.getLogger("pipeline")
CANDIDATE, CHAMPION = "candidate", "champion"
MODEL_VERSIONS_TAG = "mlflow.modelVersions"  # on a LoggedModel: the registry versions it became (MLflow's own tag)


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


def _evaluation(summary: Summary, row: ArtifactRow) -> dict:
    """The metrics of the evaluate task that scored `row` (samples, classes), or {}."""
    for s in summary.stages:
        if s.type == "evaluate" and s.inputs == [row.stage]:
            return s.metrics
    return {}


def chance_problem(summary: Summary, cfg: Any, row: ArtifactRow) -> str | None:
    """Why the artifact's measured task metric does not beat chance for its task (pipeline.tasks.chance), or None."""
    from pipeline.tasks import chance, primary_label

    acc = row.accuracy
    if acc is None:
        return None
    task = str(summary.task.get("name") or "classification")
    ev = _evaluation(summary, row)
    classes = ev.get("classes")
    if classes is None and "data" in cfg:  # (an entry evaluated before the class count was recorded)
        from pipeline import data as data_mod

        classes = data_mod.num_classes(cfg.data)
    min_score = cfg.registry.get("min_score") if hasattr(cfg.registry, "get") else None
    f = chance.floor(task, int(classes) if classes else None, min_score)
    if f is None:
        return None
    threshold, words = f
    n = int(ev["samples"]) if ev.get("samples") else None
    if chance.beats(task, float(acc), threshold, n, stated=min_score is not None):
        return None
    noise = f" beyond the sampling noise of {n} validation images" if n and task == "classification" and \
        min_score is None and acc > threshold else ""
    return (f"{primary_label(task)} {acc:.1%} does not beat chance{noise} ({words}); a model no better than that is "
            f"not registered (registry.min_score states another floor)")


def _same_version(client, name: str, row: ArtifactRow):
    """The version of `name` holding this very artifact (same sha256, else same cache key), or None."""
    if "'" in name:
        return None
    sha, key = row.sha256, row.cache_key
    for v in client.search_model_versions(f"name='{name}'"):
        tags = v.tags or {}
        if (sha and tags.get("sha256") == sha) or (not sha and key and tags.get("cache_key") == key):
            return v
    return None


def _link_logged_model(client, model_id: str | None, name: str, version: str) -> None:
    """Tag the LoggedModel with the version it became, as MLflow's own register_model does (`mlflow.modelVersions`;
    the UI's "Registered" column reads it). A version made from a run's artifact cannot name the LoggedModel itself
    (an MLflow server then wants the source inside the LoggedModel's artifacts), so the version carries
    `logged_model_id` back."""
    if not model_id:
        return
    try:
        current = (client.get_logged_model(model_id).tags or {}).get(MODEL_VERSIONS_TAG)
        links = json.loads(current) if current else []
        entry = {"name": name, "version": int(version)}
        if entry not in links:
            client.set_logged_model_tags(model_id, {MODEL_VERSIONS_TAG: json.dumps([*links, entry])})
    except Exception as e:  # the version exists either way; a missing link is worth a line, not a failure
        log.warning("model registry: could not link %s v%s to its LoggedModel %s: %s", name, version, model_id, e)


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
    # the judge's verdict, nothing re-judged here; beating chance is the registry's own bar for a deployable model
    problems = [] if row.verdict.ok else [f"verdict {row.verdict.status}: " + "; ".join(row.verdict.problems)]
    chance = chance_problem(summary, cfg, row)
    if chance:
        problems.append(chance)
    if problems:
        log.info("model registry: %s not registered: %s", row.name, "; ".join(problems))
        return {"registered": False, "model": name, "artifact": row.name, "reason": "; ".join(problems)}
    stage_run = _stage_run_id(client, tracker, row.stage)
    if stage_run is None:
        return {"registered": False, "model": name, "reason": f"no MLflow run holds the artifact of {row.stage!r}"}
    model_id = (summary.mlflow.get("logged_models") or {}).get(row.name)
    lock_key = "registry-" + re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    with Cache(outputs / "cache").lock(lock_key):  # jobs of one sweep may register at once: one at a time
        same = _same_version(client, name, row)
        if same is not None:  # a re-run of the same model: its version, not a new one
            version = str(same.version)
            _link_logged_model(client, model_id, name, version)
            aliases = sorted(getattr(same, "aliases", None) or [])
            why = f"same as v{version} (the same {row.format} file, sha256 {str(row.sha256)[:12]}...)"
            log.info("model registry: %s %s: not registered again", name, why)
            tracker.set_tags({"registry.model": name, "registry.version": version, "registry.same_as": version})
            return {"registered": True, "model": name, "version": version, "same_as": version,
                    "artifact": row.name, "aliases": aliases, "champion_moved": False, "reason": why,
                    **({"logged_model_id": model_id} if model_id else {})}
        version = _new_version(client, tracker, summary, cfg, row, name, stage_run, model_id, MlflowException)
        moved, why, previous = _move_aliases(client, cfg, summary, name, version, MlflowException)
    aliases = [CANDIDATE] + ([CHAMPION] if moved else [])
    log.info("model registry: %s v%s (%s) -> %s; %s", name, version, row.name, ", ".join(aliases), why)
    tracker.set_tags({"registry.model": name, "registry.version": version, "registry.aliases": ",".join(aliases)})
    return {"registered": True, "model": name, "version": version, "artifact": row.name, "aliases": aliases,
            "champion_moved": moved, "previous_champion": previous, "reason": why,
            **({"logged_model_id": model_id} if model_id else {})}


def _new_version(client, tracker, summary, cfg, row, name, stage_run, model_id, MlflowException) -> str:
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
            "precision": row.precision, "cache_key": row.cache_key, "sha256": row.sha256 or "",
            "objective.metrics": ",".join(metrics), **{f"objective.{m}": str(values.get(m)) for m in metrics}}
    if summary.mlflow.get("run_id"):
        tags["pipeline_run_id"] = summary.mlflow["run_id"]
    if model_id:
        tags["logged_model_id"] = model_id
    mv = client.create_model_version(name, source, run_id=stage_run, tags=tags,
                                     description=f"{row.name} ({row.format} {row.precision}) from run "
                                                 f"{tracker.run_id}")
    version = str(mv.version)
    _link_logged_model(client, model_id, name, version)
    return version


def _move_aliases(client, cfg, summary, name: str, version: str, MlflowException) -> tuple[bool, str, str | None]:
    """`candidate` to the new version (only forward); `champion` too if it beats the current one on the first
    objective metric and its task metric was measured (so that it is known to beat chance). Returns (moved, why, the
    version that was champion before)."""
    primary = list(cfg.objective.metrics)[0]
    values = summary.objective["values"]
    row = summary.judged
    # `candidate` only moves forward: a slower job registering an older version must not pull it back.
    try:
        cand = int(client.get_model_version_by_alias(name, CANDIDATE).version)
    except MlflowException:
        cand = 0
    if int(version) > cand:
        client.set_registered_model_alias(name, CANDIDATE, version)
    if row is None or row.accuracy is None:
        return False, "its task metric was not measured (n/a), so it cannot be shown to beat chance: not champion", None
    try:
        champ = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        champ = None
    old = _version_value(champ, primary) if champ else None
    new = values.get(primary)
    shown = lambda v: "n/a" if v is None else format(v, ".4g")
    if champ is None and new is None:
        return False, f"{primary} was not measured (n/a): not champion", None
    if champ is None or objective.better(primary, new, old):
        client.set_registered_model_alias(name, CHAMPION, version)
        return True, ("first passing version" if champ is None else
                      f"{primary} {shown(new)} beats champion v{champ.version} ({shown(old)})"), \
            (str(champ.version) if champ else None)
    return False, f"{primary} {shown(new)} does not beat champion v{champ.version} ({shown(old)})", None
