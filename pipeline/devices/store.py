"""The measurement store: every latency measured on a device, in SQLite under the outputs folder
(outputs/measurements.db), with its device, runtime and version, the model's fingerprint and profile, precision,
threads and latency. `python -m pipeline.devices.fit` refits the estimator from it plus the published figures.

SQLite from the standard library: one file next to MLflow's own store, no server, and a write is one transaction, so a
failed run records nothing. Imports no ML framework.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import zlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

FILENAME = "measurements.db"
COLUMNS = ("recorded_at", "device", "unit", "connection", "runtime", "runtime_version", "model", "format",
           "fingerprint", "precision", "threads", "latency_p50_ms", "latency_p90_ms", "latency_mean_ms", "load_ms",
           "peak_rss_mb", "samples", "cpu", "run", "cores", "machine", "latency_min_ms", "latency_max_ms", "task_key")
SCHEMA = """
CREATE TABLE IF NOT EXISTS measurements (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  recorded_at TEXT NOT NULL, device TEXT NOT NULL, unit TEXT, connection TEXT, runtime TEXT NOT NULL,
  runtime_version TEXT, model TEXT, format TEXT, fingerprint TEXT NOT NULL, precision TEXT, threads INTEGER,
  latency_p50_ms REAL, latency_p90_ms REAL, latency_mean_ms REAL, load_ms REAL, peak_rss_mb REAL, samples INTEGER,
  cpu TEXT, run TEXT, cores INTEGER, machine TEXT);
CREATE INDEX IF NOT EXISTS measurements_device ON measurements(device, runtime);
CREATE TABLE IF NOT EXISTS profiles (fingerprint TEXT PRIMARY KEY, profile BLOB NOT NULL);
"""
# added since the first version (ALTER TABLE on an older store): min/max for a binary that prints no percentiles,
# and the benchmark task's cache key, unique per model, so that a task that runs again (a retry after its commit
# failed, cache.force) replaces its rows instead of adding them twice; and the identity columns the refit checks
ADDED = {"cores": "INTEGER", "machine": "TEXT", "latency_min_ms": "REAL", "latency_max_ms": "REAL", "task_key": "TEXT"}
INDEX = "CREATE UNIQUE INDEX IF NOT EXISTS measurements_task ON measurements(task_key, model)"


def path_in(outputs: str | Path) -> Path:
    return Path(outputs) / FILENAME


def fingerprint(path: str | Path) -> str:
    """sha256 of the model file (or of every file of a package directory, in name order), 16 hex digits."""
    p, h = Path(path), hashlib.sha256()
    files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())
    for f in files:
        h.update(f.relative_to(p).as_posix().encode() if f != p else b"")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def model_runtime(runtime: str, version: str | None) -> str | None:
    """The latency model's runtime (model.RUNTIMES) a CPU measurement was made with, from its runtime name and
    version; None when the version cannot tell (TensorFlow Lite before 2.3 ran its own 2019 kernels, XNNPACK is the
    default since 2.3, so the number alone does not say which)."""
    r = (runtime or "").lower()
    if "onnx" in r:
        return "onnxruntime"
    if "openvino" in r:
        return "openvino"
    if "executorch" in r:
        return "xnnpack"
    if any(k in r for k in ("litert", "tflite", "tensorflow lite")):
        try:
            major, minor = (int(x) for x in (version or "").split(".")[:2])
        except ValueError:
            return None
        return "tflite-2019" if (major, minor) < (2, 3) else "xnnpack"
    return None


def _connect(db: str | Path) -> sqlite3.Connection:
    Path(db).parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(str(db), timeout=30)
    con.executescript(SCHEMA)
    have = {r[1] for r in con.execute("PRAGMA table_info(measurements)")}
    with con:
        for col, kind in ADDED.items():
            if col not in have:
                con.execute(f"ALTER TABLE measurements ADD COLUMN {col} {kind}")
        con.execute(INDEX)
    return con


def record(db: str | Path, measurements: list[dict[str, Any]], profiles: dict[str, Any] | None = None) -> int:
    """Insert measurements (dicts with COLUMNS' keys) and the profiles of their models (fingerprint -> Profile or its
    to_dict()), all in one transaction. Returns the number of rows written."""
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    con = _connect(db)
    try:
        with con:  # one transaction: all rows or none
            for fp, prof in (profiles or {}).items():
                d = prof.to_dict() if hasattr(prof, "to_dict") else prof
                con.execute("INSERT OR IGNORE INTO profiles VALUES (?, ?)",
                            (fp, zlib.compress(json.dumps(d).encode())))
            for m in measurements:
                row = {**{c: None for c in COLUMNS}, "recorded_at": now, **{k: m[k] for k in COLUMNS if k in m}}
                missing = [k for k in ("device", "runtime", "fingerprint") if not row[k]]
                if missing:
                    raise ValueError(f"a measurement without {', '.join(missing)} cannot be stored: {m}")
                # (rows without a task_key never clash: NULLs are distinct in a unique index)
                con.execute(f"INSERT OR REPLACE INTO measurements ({', '.join(COLUMNS)}) "
                            f"VALUES ({', '.join('?' * len(COLUMNS))})", [row[c] for c in COLUMNS])
    finally:
        con.close()
    return len(measurements)


def rows(db: str | Path, device: str | None = None) -> list[dict[str, Any]]:
    if not Path(db).exists():
        return []
    con = _connect(db)
    con.row_factory = sqlite3.Row
    try:
        q = "SELECT * FROM measurements" + (" WHERE device = ?" if device else "") + " ORDER BY id"
        return [dict(r) for r in con.execute(q, (device,) if device else ())]
    finally:
        con.close()


def profile(db: str | Path, fp: str):
    """The stored profile of a model (pipeline.devices.profiler.Profile), or None."""
    from pipeline.devices.profiler import Layer, Profile

    con = _connect(db)
    try:
        r = con.execute("SELECT profile FROM profiles WHERE fingerprint = ?", (fp,)).fetchone()
    finally:
        con.close()
    if r is None:
        return None
    d = json.loads(zlib.decompress(r[0]))
    fields = set(Layer.__dataclass_fields__)
    return Profile(d["format"], d["precision"], [Layer(**{k: v for k, v in l.items() if k in fields})
                                                 for l in d["layers"]], d.get("source", ""))


def record_measurement(db: str | Path, device: Any, result: dict[str, Any], models: list[dict[str, Any]],
                       run: str = "", task_key: str | None = None) -> int:
    """Store what pipeline.remote.measure returned for `models` ([{name, fmt, path, precision}]): one row per model
    with its file's fingerprint and per-layer profile (profiled here; a format the profiler cannot read is stored
    without a profile and is left out of refits). One transaction. `task_key`: the benchmark task's cache key; rows
    of the same task and model replace each other (a task recorded once, however often it ran)."""
    from pipeline.devices.profiler import profile_artifact

    get = (lambda k: device.get(k)) if hasattr(device, "get") else (lambda k: getattr(device, k, None))
    rows, profiles = [], {}
    for m in models:
        r = result["models"].get(m["name"])
        if r is None:
            continue
        fp = fingerprint(m["path"])
        try:
            profiles[fp] = profile_artifact(m["fmt"], m["path"], m.get("meta"))
        except Exception:  # noqa: BLE001 - an unreadable profile must not lose the measurement
            pass
        on = r.get("measured_on") or {}
        rows.append({"device": get("name"), "unit": "cpu", "connection": on.get("connection"),
                     "runtime": r.get("runtime"), "runtime_version": r.get("version"), "model": m["name"],
                     "format": m["fmt"], "fingerprint": fp, "precision": m.get("precision"),
                     "threads": on.get("threads", result.get("threads")), "latency_p50_ms": r.get("latency_p50_ms"),
                     "latency_p90_ms": r.get("latency_p90_ms"), "latency_mean_ms": r.get("latency_mean_ms"),
                     "load_ms": r.get("load_ms"), "peak_rss_mb": result.get("peak_rss_mb"),
                     "samples": r.get("samples"), "cpu": result.get("cpu"), "run": run,
                     "cores": result.get("cores"), "machine": result.get("machine"),
                     "latency_min_ms": r.get("latency_min_ms"), "latency_max_ms": r.get("latency_max_ms"),
                     "task_key": task_key or None})
    return record(db, rows, profiles)
