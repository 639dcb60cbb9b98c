"""Opening and guarding an MLflow store: where it is (`resolve_uri`, a local SQLite file or a server checked first),
its creation under a lock, a deadline on every call (`_Deadline`), and faults explained with their fix (`explain`: a
full disk, a locked SQLite store, a server that hangs). mlflow is imported lazily; pipeline.tracking.tracker logs runs
through what this module opens.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import math
import os
import socket
import sqlite3
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pipeline.core.errors import ConfigError, PipelineError
from pipeline.tracking.stores import check_database, shown

log = logging.getLogger("pipeline")

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

