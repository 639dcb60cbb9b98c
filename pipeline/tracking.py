"""MLflow tracking: one parent run per pipeline run, one nested run per stage. mlflow is imported lazily.

Uses MlflowClient with explicit run ids (no fluent global state), so several pipelines in one process or in parallel
processes cannot log into each other's runs.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pipeline.errors import ConfigError

log = logging.getLogger("pipeline")
PARENT_TAG = "mlflow.parentRunId"


def local_uri(outputs: Path) -> str:
    return f"sqlite:///{(outputs / 'mlflow.db').resolve()}"


def check_server(uri: str, timeout_s: float) -> str | None:
    """None if the tracking server answers its health check within the timeout, else the reason.

    The whole check (connect + request + reading the answer) is bounded by `timeout_s`: a server that accepts the
    connection but never answers, or answers byte by byte, is given up on in time (urlopen's timeout is per socket
    operation, so it runs in a daemon thread that is abandoned at the deadline).
    """
    if not uri.startswith(("http://", "https://")):
        return None
    import threading

    result: list[str | None] = []

    def probe() -> None:
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s) as r:
                result.append(None if r.status == 200 else f"HTTP {r.status}")
        except (urllib.error.URLError, socket.timeout, ConnectionError, OSError, ValueError) as e:
            result.append(str(getattr(e, "reason", e)) or type(e).__name__)

    t = threading.Thread(target=probe, daemon=True, name="mlflow-health-check")
    t.start()
    t.join(timeout_s)
    return result[0] if result else f"no answer within {timeout_s:g} s"


def resolve_uri(tracking_cfg: Any, outputs: Path) -> str:
    """The URI to log to; refuses (exit 2) an unreachable server unless tracking.fallback_to_local is set."""
    uri = tracking_cfg.uri or local_uri(outputs)
    problem = check_server(uri, float(tracking_cfg.timeout_s))
    if problem is None:
        return uri
    if tracking_cfg.fallback_to_local:
        log.warning("MLflow server %s did not answer (%s); logging to the local store %s (tracking.fallback_to_local)",
                    uri, problem, local_uri(outputs))
        return local_uri(outputs)
    parsed = urlparse(uri)
    raise ConfigError(
        f"tracking.uri: the MLflow server at {uri} did not answer within {tracking_cfg.timeout_s:g} s ({problem}). "
        f"Start it (mlflow server --host {parsed.hostname} --port {parsed.port or 80}), point tracking.uri elsewhere, "
        f"or add tracking.fallback_to_local=true to log locally."
    )


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


@contextlib.contextmanager
def store_init_lock(uri: str):
    """Serialise opening a SQLite store across processes.

    MLflow creates and migrates the schema of a new SQLite store on first use; two processes doing that at once leave
    the store broken for good ("table _alembic_tmp_tags already exists"). Other stores need no lock.
    """
    if not uri.startswith("sqlite:///"):
        yield
        return
    db = Path(uri[len("sqlite:///"):])
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            _create_sqlite_store(db)
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _create_sqlite_store(db: Path) -> None:
    """Create a new store under a temporary name and rename it into place once MLflow has built its schema: a run
    killed during the (seconds long) first migration leaves no half-built mlflow.db that every later run would refuse.
    Called with the store's lock held, so any temporary file found here is a leftover of a killed run."""
    for stale in db.parent.glob(f".{db.name}.*.creating*"):
        stale.unlink(missing_ok=True)
    if db.exists():
        return
    from mlflow.tracking import MlflowClient

    tmp = db.with_name(f".{db.name}.{os.getpid()}.creating")
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp}")  # creates and migrates the schema
    with contextlib.suppress(Exception):  # close its connections before the file moves
        client._tracking_client.store.engine.dispose()
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, db)


class Tracker:
    """Parent run + nested stage runs in one experiment."""

    def __init__(self, uri: str, experiment: str, artifact_root: Path | None):
        import mlflow
        from mlflow.tracking import MlflowClient

        self.mlflow = mlflow
        self.uri = uri
        with store_init_lock(uri):  # MlflowClient opens (and on first use creates) the store
            self.client = MlflowClient(tracking_uri=uri)
            self._open_experiment(experiment, artifact_root)

    def _open_experiment(self, experiment: str, artifact_root: Path | None) -> None:
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            location = artifact_root.resolve().as_uri() if artifact_root else None
            try:
                self.experiment_id = self.client.create_experiment(experiment, artifact_location=location)
            except Exception:  # created concurrently by another run
                exp = self.client.get_experiment_by_name(experiment)
                if exp is None:
                    raise
                self.experiment_id = exp.experiment_id
        else:
            self.experiment_id = exp.experiment_id
        self.experiment = experiment
        self.run_id: str | None = None

    def start(self, run_name: str, params: dict[str, Any], tags: dict[str, str]) -> str:
        # host + pid let a later run recognise this one as orphaned if the process is killed (close_orphans)
        tags = {**tags, "pipeline.host": socket.gethostname(), "pipeline.pid": str(os.getpid())}
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags)
        self.run_id = run.info.run_id
        self.log_params(self.run_id, params)
        return self.run_id

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        flat = [Param(k, str(v)[:6000]) for k, v in _flatten(params).items()]
        for i in range(0, len(flat), 100):
            self.client.log_batch(run_id, params=flat[i : i + 100])

    def log_metrics(self, run_id: str, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric
        import time

        now = int(time.time() * 1000)
        ms = [Metric(k, float(v), now, 0) for k, v in metrics.items() if v is not None]
        for i in range(0, len(ms), 500):
            self.client.log_batch(run_id, metrics=ms[i : i + 500])

    def log_stage(self, rec, out_dir: Path | None) -> None:
        """A nested run for one task: parameters, metrics, wall time, cache hit/miss, produced files."""
        tags = {PARENT_TAG: self.run_id, "stage.type": rec.type, "stage.status": rec.status,
                "cache.hit": str(rec.status == "reused").lower(), "cache.key": rec.cache_key, "cache.reason": rec.reason[:5000]}
        if rec.error:
            tags["error"] = rec.error[:5000]
        run = self.client.create_run(self.experiment_id, run_name=rec.name, tags=tags)
        rid = run.info.run_id
        self.log_params(rid, {"type": rec.type, "inputs": ",".join(rec.inputs), **rec.params})
        self.log_metrics(rid, {**rec.metrics, "wall_seconds": rec.seconds, "cache_hit": float(rec.status == "reused")})
        if out_dir is not None and rec.artifact is not None:
            self.client.log_artifacts(rid, str(out_dir), artifact_path=rec.stage)
            self.log_model(rid, rec.artifact)
        for f in rec.files:
            self.client.log_artifact(rid, str(f))
        if rec.info:
            with tempfile.TemporaryDirectory() as d:
                p = Path(d) / "info.json"
                p.write_text(json.dumps(rec.info, indent=2, default=str))
                self.client.log_artifact(rid, str(p))
        self.client.set_terminated(rid, "FAILED" if rec.status == "failed" else "FINISHED")

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
                    mlflow.onnx.save_model(onnx.load(str(artifact.path)), str(Path(d) / "onnx_model"), signature=sig,
                                           save_as_external_data=False)
                    self.client.log_artifacts(run_id, str(Path(d) / "onnx_model"), artifact_path="onnx_model")
        except Exception as e:  # the model files are logged already; a flavor problem must not fail the run
            log.warning("MLflow: could not log %s model metadata for %s: %s", artifact.format, artifact.stage, e)

    def log_files(self, paths: list[Path]) -> None:
        for p in paths:
            self.client.log_artifact(self.run_id, str(p))

    def set_tags(self, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, v)

    def close_orphans(self) -> list[str]:
        """Mark KILLED the runs of this experiment left RUNNING by a pipeline process of this host that no longer
        exists (SIGKILL, power loss: nothing could close them). Returns their ids."""
        host = socket.gethostname().replace("'", "")
        runs = self.client.search_runs([self.experiment_id], max_results=1000,
                                       filter_string=f"attributes.status = 'RUNNING' and tags.`pipeline.host` = '{host}'")
        closed = []
        for r in runs:
            pid = r.data.tags.get("pipeline.pid", "")
            if r.info.run_id == self.run_id or not pid.isdigit() or _alive(int(pid)):
                continue
            self.client.set_tag(r.info.run_id, "pipeline.closed_by", f"run {self.run_id}: process {pid} was gone")
            self.client.set_terminated(r.info.run_id, "KILLED")
            closed.append(r.info.run_id)
        if closed:
            log.info("MLflow: marked %d run(s) left RUNNING by killed processes as KILLED", len(closed))
        return closed

    def end(self, status: str) -> None:
        """status: FINISHED | FAILED | KILLED."""
        if self.run_id:
            self.client.set_terminated(self.run_id, status)
