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
import errno
import fcntl
import json
import logging
import math
import os
import socket
import sqlite3
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pipeline.core.errors import ConfigError, PipelineError
from pipeline.tracking.stores import check_database, make_reserve, shown

log = logging.getLogger("pipeline")
PARENT_TAG = "mlflow.parentRunId"
LOGGED_BY_TAG = "cache.logged_by"  # a reused stage run: the run whose artifacts hold its files
TRACKER_TAG = "pipeline.tracker"  # the Tracker that created a run (one per pipeline run)


class TrackingError(PipelineError):
    """An MLflow call failed or missed its deadline while the run was going on (exit 1; finished stages stay cached)."""

    exit_code = 1


class TrackingOpenError(ConfigError):
    """The MLflow store could not be opened before any stage ran (exit 2). The message names the cause and the fix."""


# Characters SQLAlchemy reads as URL syntax in a SQLite URI (the database part ends at '?' and is percent-decoded).
# Quoting them would make SQLAlchemy open the right file, but MLflow creates the store's parent folder from the quoted
# text (a stray folder named with %3F outside outputs/), so such paths are refused instead.
URI_UNSAFE = "?%"


def local_uri(outputs: Path) -> str:
    """The embedded store's URI. Spaces, '#' and non-ASCII characters stand as they are (SQLAlchemy and MLflow read
    them literally); a path holding '?' or '%' is refused (ConfigError) because no URI of it keeps MLflow inside it."""
    db = (Path(outputs) / "mlflow.db").resolve()
    bad = sorted({c for c in str(db) if c in URI_UNSAFE})
    if bad:
        raise ConfigError(
            f"paths.outputs: {str(outputs)!r} holds {' and '.join(repr(c) for c in bad)}, which a SQLite URI cannot "
            f"carry (SQLAlchemy cuts it at '?' and decodes '%', and MLflow would create folders outside outputs/). "
            f"Choose paths.outputs=DIR without them, log to a server (tracking.uri=http://HOST:PORT), or run with "
            f"tracking=none.")
    return f"sqlite:///{db}"


def sqlite_path(uri: str) -> Path | None:
    """The database file a sqlite:/// URI opens, decoded as SQLAlchemy decodes it; None for other stores."""
    if not uri.startswith("sqlite:///"):
        return None
    from sqlalchemy.engine import make_url

    database = make_url(uri).database
    return Path(database) if database and database != ":memory:" else None


def _sqlite_uri(path: Path) -> str:
    """A sqlite:/// URI SQLAlchemy decodes back to `path` (only '%' and '?' are URL syntax to it)."""
    return "sqlite:///" + str(path).replace("%", "%25").replace("?", "%3F")


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
    """The URI to log to; refuses (exit 2) an unreachable server or database unless tracking.fallback_to_local."""
    timeout = tracking_cfg.timeout_s
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout) or timeout <= 0:
        raise ConfigError(f"tracking.timeout_s: must be a finite number > 0, got {timeout!r}")
    uri = tracking_cfg.uri or local_uri(outputs)
    db_problem = check_database(uri, float(tracking_cfg.timeout_s))
    if db_problem is not None:
        if tracking_cfg.fallback_to_local:
            log.warning("%s; logging to the local store %s (tracking.fallback_to_local)", db_problem, local_uri(outputs))
            return local_uri(outputs)
        raise ConfigError(db_problem)
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
    db = sqlite_path(uri)
    if db is None:
        yield
        return
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
    client = MlflowClient(tracking_uri=_sqlite_uri(tmp))  # creates and migrates the schema
    with contextlib.suppress(Exception):  # close its connections before the file moves
        client._tracking_client.store.engine.dispose()
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, db)


# --- faults: deadlines and what an error means -------------------------------------------------------------------
FILE_METHODS = {"log_artifact", "log_artifacts", "download_artifacts", "create_model_version", "log_inputs",
                "copy_model_version"}
MIN_TRANSFER_BYTES_PER_S = 1e6  # a file-moving call gets timeout_s x 6 plus 1 s per MB it sends
# The embedded SQLite store: a call waits at least this long (its first call imports and opens the store, which takes
# seconds on a loaded machine); a lock held by another process is reported by SQLite itself after 5 s anyway.
LOCAL_MIN_DEADLINE_S = 30.0


def _bytes_under(args: tuple) -> int:
    total = 0
    for a in args:
        if isinstance(a, (str, Path)) and len(str(a)) < 4096:
            with contextlib.suppress(OSError, ValueError):
                p = Path(a)
                if p.is_file():
                    total += p.stat().st_size
                elif p.is_dir():
                    total += sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return total


def _chain(e: BaseException) -> list[BaseException]:
    out, seen = [], set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        out.append(e)
        e = e.__cause__ or e.__context__
    return out


def explain(e: BaseException, uri: str, action: str) -> str:
    """One sentence naming what went wrong with the store at `uri` and the fix, from any MLflow/SQLAlchemy error."""
    errs = _chain(e)
    text = " ".join(str(x) for x in errs).lower()
    db = sqlite_path(uri)
    where = str(db.parent) if db else None
    if disk_full(e):
        return (f"MLflow: {action} failed: the disk holding {where or 'the artifact folder'} is full. Free space "
                f"there or move paths.outputs (or tracking.uri) to a bigger disk (paths.outputs=DIR), or run with "
                f"tracking=none; then re-run (finished stages are reused)")
    if "database is locked" in text or "database table is locked" in text:
        return (f"MLflow: {action} failed: the store {db or uri} is locked by another process holding a write "
                f"transaction on it (a `mlflow ui`/`mlflow server` or sqlite3 shell on that file, or a stuck run). "
                f"The store itself is fine: wait for or stop that process, serve the store to every run instead "
                f"(mlflow server --backend-store-uri {uri}, then tracking.uri=http://HOST:PORT), or run with "
                f"tracking=none")
    if "readonly database" in text or "read-only file system" in text or "permission denied" in text:
        return (f"MLflow: {action} failed: the store {db or uri} cannot be written ({_first_line(e)}). Make it "
                f"writable, choose paths.outputs=DIR elsewhere, or run with tracking=none")
    if "malformed" in text or "not a database" in text or "file is encrypted" in text:
        return (f"MLflow: {action} failed: {db or uri} is not a healthy MLflow store ({_first_line(e)}). Move it "
                f"away (a fresh one is created), point tracking.uri at another store, or run with tracking=none")
    return f"MLflow: {action} failed on {shown(uri)}: {_first_line(e)}"


FAULT_WORDS = ("database or disk is full", "no space left", "database is locked", "database table is locked",
               "readonly database", "read-only file system", "permission denied", "malformed", "not a database",
               "file is encrypted", "disk i/o error", "unable to open database", "max retries exceeded",
               "api request to", "connection", "timed out")


def disk_full(e: BaseException) -> bool:
    errs = _chain(e)
    text = " ".join(str(x) for x in errs).lower()
    return any(isinstance(x, OSError) and x.errno in (errno.ENOSPC, errno.EDQUOT) for x in errs) or \
        "database or disk is full" in text or "no space left" in text


def is_fault(e: BaseException) -> bool:
    """The store or the way to it failed (disk, lock, network), as opposed to an answer such as 'not found' that
    callers handle themselves; only faults are turned into TrackingError."""
    errs = _chain(e)
    if any(isinstance(x, OSError) for x in errs):  # (requests' and urllib3's connection errors are OSErrors too)
        return True
    text = " ".join(str(x) for x in errs).lower()
    return any(w in text for w in FAULT_WORDS)


def _first_line(e: BaseException) -> str:
    t = str(e).strip()
    return (t.splitlines()[0] if t else type(e).__name__)[:300]


def _sqlite_locked(db: Path) -> bool:
    """Whether another connection holds a write lock on `db` right now (checked, never waited for)."""
    try:
        con = sqlite3.connect(f"file:{db}?mode=rw", uri=True, timeout=0.05)
    except sqlite3.Error:
        return False
    try:
        con.execute("BEGIN IMMEDIATE")
        con.rollback()
        return False
    except sqlite3.OperationalError as e:
        return "locked" in str(e)
    finally:
        con.close()


class _Deadline:
    """MlflowClient with a deadline on every call: the call runs in a daemon thread and is given up on at
    `timeout_s` (file-moving calls: 6 x timeout_s + 1 s per MB; the embedded store: at least 30 s), raising
    `error_type` naming the URI and the fix.

    MLflow's own HTTP timeout is per socket operation and its retries (7 by default, with backoff) add up to minutes;
    they are capped below as well so an abandoned call ends soon after. A thread rather than a signal alarm: it works
    off the main thread (sweep launchers) and leaves SIGINT/SIGTERM to the caller, which stays responsive."""

    def __init__(self, client, uri: str, timeout_s: float):
        self._client, self.uri, self.timeout_s = client, uri, float(timeout_s)
        self._local = uri.startswith("sqlite:")
        self.reserve: Path | None = None  # (make_reserve) given up to close a run when the disk is full
        self.fault: str | None = None  # the first fault of the open store, once one happened (the run fails on it)
        self.error_type: type[PipelineError] = TrackingOpenError  # until the store is open; then TrackingError

    def __getattr__(self, name: str):
        attr = getattr(self._client, name)
        if not callable(attr) or name.startswith("_"):
            return attr

        def call(*args, **kwargs):
            return self.call(name, attr, *args, **kwargs)

        return call

    def call(self, name: str, fn, /, *args, **kwargs):  # positional-only: MLflow calls take name= too
        limit = self.timeout_s
        if name in FILE_METHODS:
            limit = 6 * self.timeout_s + _bytes_under(args) / MIN_TRANSFER_BYTES_PER_S
        if self._local:
            limit = max(limit, LOCAL_MIN_DEADLINE_S)
        box: dict[str, Any] = {}

        def target():
            try:
                box["value"] = fn(*args, **kwargs)
            except BaseException as e:  # handed to the caller's thread
                box["error"] = e

        t = threading.Thread(target=target, daemon=True, name=f"mlflow-{name}")
        t.start()
        t.join(limit)
        if t.is_alive():
            raise self.error_type(self._timed_out(name, limit))
        if "error" in box:
            e = box["error"]
            if isinstance(e, PipelineError) or not is_fault(e):
                raise e  # an answer (not found, already exists, invalid value): the caller's to handle
            if name == "set_terminated" and self.reserve is not None and disk_full(e):
                self.reserve.unlink(missing_ok=True)  # the room kept for this: close the run, then say why
                self.reserve = None
                log.debug("the disk of %s is full: released its reserve to close run %s", self.uri, args[:1])
                return self.call(name, fn, *args, **kwargs)
            message = explain(e, self.uri, name)
            if self.error_type is TrackingError:
                self.fault = self.fault or message
            raise self.error_type(message) from e
        return box.get("value")

    def _timed_out(self, name: str, limit: float) -> str:
        db = sqlite_path(self.uri)
        if db is not None and db.exists() and _sqlite_locked(db):
            return explain(sqlite3.OperationalError("database is locked"), self.uri, f"{name} (waited {limit:g} s)")
        if db is not None:
            return (f"MLflow: {name} on the store {db} did not finish within {limit:g} s (tracking.timeout_s="
                    f"{self.timeout_s:g}); check that disk, raise tracking.timeout_s, or run with tracking=none")
        if not self.uri.startswith(("http://", "https://")):  # a database URI: the database, not a server
            return (f"tracking.uri: the database {shown(self.uri)} did not answer {name} within {limit:g} s "
                    f"(tracking.timeout_s={self.timeout_s:g}). Check that it runs and accepts this user "
                    f"({check_database(self.uri, 2) or 'it accepts connections'}), raise tracking.timeout_s, or "
                    f"run with tracking=local or tracking=none")
        parsed = urlparse(self.uri)
        return (f"tracking.uri: the MLflow server at {self.uri} did not answer {name} within {limit:g} s "
                f"(tracking.timeout_s={self.timeout_s:g}; its /health may answer while its API hangs, e.g. a stuck "
                f"database behind it). Restart it (mlflow server --host {parsed.hostname} --port {parsed.port or 80}),"
                f" raise tracking.timeout_s, or add tracking.fallback_to_local=true to log locally")


def _cap_http_retries(timeout_s: float) -> None:
    """MLflow's REST client: a per-request timeout of tracking.timeout_s and 2 retries (unless the user set them)."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(1, math.ceil(timeout_s))))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")


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
