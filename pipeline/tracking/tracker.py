"""MLflow tracking: one parent run per pipeline run, one nested run per stage. mlflow is imported lazily.

Uses MlflowClient with explicit run ids (no fluent global state), so several pipelines in one process or in parallel
processes cannot log into each other's runs.

Under faults: every MLflow call has a deadline (`tracking.timeout_s`; calls that move files get more, see `_Deadline`),
so a server that answers /health but hangs on its API fails the call in time naming the URI and the fix; a full disk
and a locked SQLite store are named with theirs (`explain`); every run this process opens is closed FINISHED, FAILED
or KILLED on every path, and the next run marks KILLED what a killed process left RUNNING (`close_orphans`).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from pipeline.core.errors import PipelineError
from pipeline.tracking.connection import (LOCAL_MIN_DEADLINE_S, TrackingError, TrackingOpenError, _cap_http_retries,
                                          _Deadline, check_server, disk_full, explain, is_fault, local_uri,
                                          resolve_uri, sqlite_path, store_init_lock)
from pipeline.tracking.stores import make_reserve, shown

# callers open stores, name faults and check servers through this module (tracking.local_uri, tracking.explain, ...)
__all__ = ["LOCAL_MIN_DEADLINE_S", "PARENT_TAG", "LOGGED_BY_TAG", "TRACKER_TAG", "Tracker", "TrackingError",
           "TrackingOpenError", "check_server", "disk_full", "explain", "is_fault", "local_uri", "resolve_uri",
           "shown", "sqlite_path", "store_init_lock", "terminate"]

log = logging.getLogger("pipeline")
PARENT_TAG = "mlflow.parentRunId"
LOGGED_BY_TAG = "cache.logged_by"  # a reused stage run: the run whose artifacts hold its files
TRACKER_TAG = "pipeline.tracker"  # the Tracker that created a run (one per pipeline run)

def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
    elif isinstance(d, list):
        out[prefix[:-1]] = json.dumps(d)
    else:
        out[prefix[:-1]] = d
    return out


class Tracker:
    """Parent run + nested stage runs in one experiment."""

    def __init__(self, uri: str, experiment: str, artifact_root: Path | None, timeout_s: float = 10.0):
        import mlflow
        from mlflow.tracking import MlflowClient

        self.mlflow = mlflow
        self.uri = uri
        self.run_id: str | None = None
        self._open_runs: set[str] = set()  # stage runs created and not yet terminated
        # on every run this Tracker creates: a call interrupted by a signal may create a run whose id never reaches us,
        # and `end` finds it by this tag
        self.token = uuid.uuid4().hex
        if uri.startswith(("http://", "https://")):
            _cap_http_retries(timeout_s)
        self.client = _Deadline(None, uri, timeout_s)
        try:
            with store_init_lock(uri):  # MlflowClient opens (and on first use creates) the store
                self.client._client = self.client.call("open", MlflowClient, tracking_uri=uri)
                self._open_experiment(experiment, artifact_root)
        except OSError as e:  # the lock file or the store's folder
            raise TrackingOpenError(explain(e, uri, "opening the store")) from e
        self.client.error_type = TrackingError
        db = sqlite_path(uri)
        if db is not None:
            self.client.reserve = make_reserve(db)

    def _open_experiment(self, experiment: str, artifact_root: Path | None) -> None:
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            location = artifact_root.resolve().as_uri() if artifact_root else None
            try:
                self.experiment_id = self.client.create_experiment(experiment, artifact_location=location)
            except Exception as e:  # created concurrently by another run?
                exp = self.client.get_experiment_by_name(experiment)
                if exp is None:
                    raise e
                self.experiment_id = exp.experiment_id
        else:
            self.experiment_id = exp.experiment_id
        self.experiment = experiment

    @staticmethod
    def _owner_tags() -> dict[str, str]:
        """host + pid let a later run recognise a run as orphaned if this process is killed (close_orphans)."""
        return {"pipeline.host": socket.gethostname(), "pipeline.pid": str(os.getpid())}

    def start(self, run_name: str, params: dict[str, Any], tags: dict[str, str]) -> str:
        run = self.client.create_run(self.experiment_id, run_name=run_name,
                                     tags={**tags, **self._owner_tags(), TRACKER_TAG: self.token})
        self.run_id = run.info.run_id
        try:
            self.log_params(self.run_id, params)
        except BaseException as e:
            self._terminate_quietly(self.run_id, _status_of(e))
            raise
        return self.run_id

    def start_parent(self, run_name: str, tags: dict[str, str]) -> str:
        """A run that is not this Tracker's own pipeline run (a sweep's parent): tagged with this process so that the
        next run closes it if this process is killed. Close it with `terminate(run_id, status)`."""
        return self.client.create_run(self.experiment_id, run_name=run_name,
                                      tags={**tags, **self._owner_tags()}).info.run_id

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        flat = [Param(k, str(v)[:6000]) for k, v in _flatten(params).items()]
        for i in range(0, len(flat), 100):
            self.client.log_batch(run_id, params=flat[i : i + 100])

    def log_params_and_metrics(self, run_id: str, params: dict[str, Any], metrics: dict[str, float]) -> None:
        """Both in one store transaction when they fit MLflow's batch limits (100 params, 1000 entities)."""
        from mlflow.entities import Metric, Param

        flat = [Param(k, str(v)[:6000]) for k, v in _flatten(params).items()]
        now = int(time.time() * 1000)
        ms = [Metric(k, float(v), now, 0) for k, v in metrics.items() if v is not None]
        if len(flat) > 100 or len(flat) + len(ms) > 1000:
            self.log_params(run_id, params)
            self.log_metrics(run_id, metrics)
            return
        self.client.log_batch(run_id, params=flat, metrics=ms)

    def log_metrics(self, run_id: str, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        ms = [Metric(k, float(v), now, 0) for k, v in metrics.items() if v is not None]
        for i in range(0, len(ms), 500):
            self.client.log_batch(run_id, metrics=ms[i : i + 500])

    def log_stage(self, rec, out_dir: Path | None) -> str:
        """A nested run for one task: parameters, metrics, wall time, cache hit/miss, produced files. The run is closed
        on every path: FINISHED/FAILED as the task went, KILLED when interrupted while logging, FAILED when logging
        itself failed."""
        tags = {PARENT_TAG: self.run_id, "stage.type": rec.type, "stage.status": rec.status,
                "cache.hit": str(rec.status == "reused").lower(), "cache.key": rec.cache_key,
                "cache.reason": rec.reason[:5000], **self._owner_tags(), TRACKER_TAG: self.token}
        if rec.error:
            tags["error"] = rec.error[:5000]
        # A reused task's files are the bytes an earlier run logged under the same cache key: point at that run
        # instead of copying them again (re-logging was most of what a fully cached re-run spent in MLflow).
        origin = self._logged_by(rec.cache_key) if rec.status == "reused" and out_dir is not None else None
        if origin:
            tags[LOGGED_BY_TAG] = origin
        run = self.client.create_run(self.experiment_id, run_name=rec.name, tags=tags)
        rid = run.info.run_id
        self._open_runs.add(rid)
        try:
            self.log_params_and_metrics(rid, {"type": rec.type, "inputs": ",".join(rec.inputs), **rec.params},
                                        {**rec.metrics, "wall_seconds": rec.seconds,
                                         "cache_hit": float(rec.status == "reused")})
            if out_dir is not None and rec.artifact is not None and not origin:
                self.client.log_artifacts(rid, str(out_dir), artifact_path=rec.stage)
                self._log_artifact_meta(rid, rec.stage, rec.artifact, Path(out_dir))
                self.log_model(rid, rec.artifact)
            for f in ([] if origin else rec.files):
                self.client.log_artifact(rid, str(f))
            if rec.info and not origin:
                with tempfile.TemporaryDirectory() as d:
                    p = Path(d) / "info.json"
                    p.write_text(json.dumps(rec.info, indent=2, default=str))
                    self.client.log_artifact(rid, str(p))
        except BaseException as e:
            self._terminate_quietly(rid, _status_of(e))
            raise
        self.client.set_terminated(rid, "FAILED" if rec.status == "failed" else "FINISHED")
        self._open_runs.discard(rid)
        return rid

    def _log_artifact_meta(self, run_id: str, stage: str, artifact, out_dir: Path) -> None:
        """artifact.json at the stage run's root, next to the <stage>/ folder a registry version points at (which keeps
        the model's files only): the format, precision, file within that folder and metadata (input shape, layout,
        quantization), so that a registered version can be loaded and run again (the release gate times the champion
        against a new model)."""
        try:
            rel = str(Path(artifact.path).resolve().relative_to(out_dir.resolve()))
        except ValueError:
            rel = Path(artifact.path).name
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / "artifact.json"
            p.write_text(json.dumps({"format": artifact.format, "precision": artifact.precision, "path": rel,
                                     "meta": artifact.meta}, indent=1, default=str))
            self.client.log_artifact(run_id, str(p))

    def _logged_by(self, cache_key: str) -> str | None:
        """The finished stage run of this experiment that computed `cache_key` and logged its files, if any."""
        if not cache_key or "'" in cache_key:
            return None
        runs = self.client.search_runs([self.experiment_id], max_results=1, filter_string=(
            f"tags.`cache.key` = '{cache_key}' and tags.`stage.status` = 'ran' and attributes.status = 'FINISHED'"))
        return runs[0].info.run_id if runs else None

    def log_model(self, run_id: str, artifact) -> None:
        """ONNX: MLflow's onnx flavor with a signature (loadable with mlflow.onnx.load_model). TFLite and Core ML have no
        flavor: their files are logged with the stage, plus model_meta.json (I/O names, shapes, dtypes, quantization)."""
        if artifact.format not in ("onnx", "tflite", "coreml"):
            return
        from pipeline.runtimes import describe

        try:
            desc = describe(artifact.format, artifact.path, artifact.meta)
            with tempfile.TemporaryDirectory() as d:
                (Path(d) / "model_meta.json").write_text(json.dumps(desc, indent=2, default=str))
                self.client.log_artifact(run_id, str(Path(d) / "model_meta.json"))
                if artifact.format == "onnx":
                    import mlflow.onnx
                    import numpy as np
                    import onnx
                    from mlflow.models import ModelSignature
                    from mlflow.types.schema import Schema, TensorSpec

                    spec = lambda vs: Schema([TensorSpec(np.dtype(v["dtype"]), tuple(
                        s if isinstance(s, int) and s > 0 else -1 for s in v["shape"]), v["name"]) for v in vs])
                    sig = ModelSignature(inputs=spec(desc["inputs"]), outputs=spec(desc["outputs"]))
                    # the requirements named, not inferred: inference starts a Python subprocess per model, which was
                    # half the time of a fully cached re-run
                    from importlib.metadata import version

                    reqs = [f"onnx=={version('onnx')}", f"onnxruntime=={version('onnxruntime')}"]
                    mlflow.onnx.save_model(onnx.load(str(artifact.path)), str(Path(d) / "onnx_model"), signature=sig,
                                           save_as_external_data=False, pip_requirements=reqs)
                    self.client.log_artifacts(run_id, str(Path(d) / "onnx_model"), artifact_path="onnx_model")
        except TrackingError:  # the store itself failed (deadline, full disk): that is the run's problem
            raise
        except Exception as e:  # the model files are logged already; a flavor problem must not fail the run
            log.warning("MLflow: could not log %s model metadata for %s: %s", artifact.format, artifact.stage, e)

    def log_files(self, paths: list[Path]) -> None:
        for p in paths:
            self.client.log_artifact(self.run_id, str(p))

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items()]
        for i in range(0, len(items), 100):  # one store transaction per 100 tags (MLflow's batch limit)
            self.client.log_batch(self.run_id, tags=items[i : i + 100])

    def close_orphans(self, experiment_ids: list[str] | None = None) -> list[str]:
        """Mark KILLED the runs left RUNNING that nothing will ever close: those of a pipeline process of this host
        that no longer exists (SIGKILL, power loss; pipeline runs, stage runs and sweep parents all carry the
        process's host and pid), and stage runs still RUNNING under a parent that has ended (a run killed while it
        logged a stage). Searches this experiment, or `experiment_ids`. Returns the ids closed."""
        host = socket.gethostname().replace("'", "")
        ids = list(experiment_ids or [self.experiment_id])
        running = self._search(ids, "attributes.status = 'RUNNING'")
        ended_parents: dict[str, bool] = {}
        closed = []
        for r in running:
            rid, tags = r.info.run_id, r.data.tags
            if rid == self.run_id or rid in self._open_runs:
                continue
            pid = tags.get("pipeline.pid", "")
            why = None
            if tags.get("pipeline.host") == host and pid.isdigit() and not _alive(int(pid)):
                why = f"process {pid} was gone"
            elif tags.get(PARENT_TAG) and not (pid.isdigit() and tags.get("pipeline.host") == host and
                                                _alive(int(pid))):
                parent = tags[PARENT_TAG]
                if parent not in ended_parents:
                    try:
                        ended_parents[parent] = self.client.get_run(parent).info.status != "RUNNING"
                    except PipelineError:
                        raise
                    except Exception:  # the parent was deleted
                        ended_parents[parent] = True
                if ended_parents[parent]:
                    why = f"its parent run {parent} had ended"
            if why is None:
                continue
            self.client.set_tag(rid, "pipeline.closed_by", f"run {self.run_id}: {why}")
            self.client.set_terminated(rid, "KILLED")
            closed.append(rid)
        if closed:
            log.info("MLflow: marked %d run(s) left RUNNING by killed processes as KILLED", len(closed))
        return closed

    def _search(self, experiment_ids: list[str], filter_string: str) -> list:
        out, token = [], None
        while True:
            page = self.client.search_runs(experiment_ids, filter_string=filter_string, max_results=1000,
                                           page_token=token)
            out += list(page)
            token = getattr(page, "token", None)
            if not token:
                return out

    def terminate(self, run_id: str, status: str) -> None:
        """Close any run (e.g. a sweep parent from `start_parent`) with FINISHED | FAILED | KILLED."""
        self.client.set_terminated(run_id, status)

    def _terminate_quietly(self, run_id: str, status: str) -> None:
        with contextlib.suppress(Exception):
            self.client.set_terminated(run_id, status)
        self._open_runs.discard(run_id)

    def end(self, status: str) -> None:
        """status: FINISHED | FAILED | KILLED. Stage runs still open (interrupted while logging) end as KILLED or
        FAILED with it; the pipeline run last, so that no stage run outlives its parent RUNNING."""
        for rid in list(self._open_runs):
            self._terminate_quietly(rid, "KILLED" if status == "KILLED" else "FAILED")
        with contextlib.suppress(Exception):  # runs whose creation a signal interrupted: we never learnt their ids
            for r in self._search([self.experiment_id], f"tags.`{TRACKER_TAG}` = '{self.token}' and "
                                                        f"attributes.status = 'RUNNING'"):
                if r.info.run_id != self.run_id:
                    self._terminate_quietly(r.info.run_id, "KILLED" if status == "KILLED" else "FAILED")
        if self.run_id:
            self.client.set_terminated(self.run_id, status)


def _status_of(e: BaseException) -> str:
    return "KILLED" if isinstance(e, (KeyboardInterrupt, SystemExit)) else "FAILED"


def terminate(uri: str, run_id: str, status: str, timeout_s: float = 10.0) -> None:
    """Close run `run_id` of the store at `uri` with a deadline (for code that holds no Tracker, e.g. a sweep's
    launcher at exit)."""
    from mlflow.tracking import MlflowClient

    client = _Deadline(None, uri, timeout_s)
    client.error_type = TrackingError
    client._client = client.call("open", MlflowClient, tracking_uri=uri)
    client.set_terminated(run_id, status)
