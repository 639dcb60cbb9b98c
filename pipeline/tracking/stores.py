"""Tracking stores that are not an MLflow server: a database MLflow writes to directly (postgresql://, mysql:// ...)
checked before anything is written, and room kept beside a SQLite store so that runs can be closed when its disk
fills up. Imported by pipeline.tracking.tracker; imports no ML framework (SQLAlchemy, which MLflow brings, when a database URI
is used).
"""
from __future__ import annotations

import math
import os
import socket
from pathlib import Path


def _first_line(e: BaseException) -> str:
    t = str(e).strip()
    return (t.splitlines()[0] if t else type(e).__name__)[:300]


DATABASES = {"postgresql": ("PostgreSQL", 5432), "postgres": ("PostgreSQL", 5432), "mysql": ("MySQL", 3306),
             "mariadb": ("MariaDB", 3306), "mssql": ("SQL Server", 1433)}


def shown(uri: str) -> str:
    """`uri` as it may be printed: a database URI's password hidden."""
    if uri.split(":", 1)[0].split("+")[0].lower() not in DATABASES:
        return uri
    try:
        from sqlalchemy.engine import make_url

        return make_url(uri).render_as_string(hide_password=True)
    except Exception:
        return uri.split("://", 1)[0] + "://..."


def check_database(uri: str, timeout_s: float) -> str | None:
    """None if the database server of a database URI (postgresql://, mysql:// ...) accepts a TCP connection within the
    timeout (or the URI names a local socket), else one sentence naming the database, the cause and the fix. MLflow
    itself would retry a refused connection for minutes and then be taken for a hung tracking server."""
    kind = DATABASES.get(uri.split(":", 1)[0].split("+")[0].lower())
    if kind is None:
        return None
    from sqlalchemy.engine import make_url

    try:
        url = make_url(uri)
    except Exception as e:
        return (f"tracking.uri: {shown(uri)!r} is not a database URI SQLAlchemy can read ({e}); write "
                f"{kind[0].lower()}://USER[:PASSWORD]@HOST[:PORT]/DATABASE")
    if not url.host:  # a Unix socket: no port to probe, the driver's own connection says what is wrong
        return _login_problem(uri, url, f"the {kind[0]} database {url.database or ''!r} (local socket)", kind[0],
                              timeout_s)
    port = url.port or kind[1]
    where = f"the {kind[0]} database {url.database or ''!r} at {url.host}:{port}"
    try:
        socket.create_connection((url.host, port), timeout=timeout_s).close()
    except OSError as e:
        why = e.strerror or str(e) or type(e).__name__
        return (f"tracking.uri: {where} cannot be reached ({why}). This is the database MLflow stores runs in, not "
                f"an MLflow server: start {kind[0]} there (e.g. systemctl start postgresql, or pg_ctl -D DATADIR "
                f"start), check the host and port in tracking.uri, or log elsewhere: tracking=local (SQLite under "
                f"paths.outputs) or tracking=none")
    return _login_problem(uri, url, where, kind[0], timeout_s)


def _login_problem(uri: str, url, where: str, kind: str, timeout_s: float) -> str | None:
    """One connection through SQLAlchemy: the driver's own words for a missing driver, a refused login or a missing
    database (MLflow would retry them for a minute and a half before giving up)."""
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    args = {"connect_timeout": max(1, math.ceil(timeout_s))} if kind != "SQL Server" else {}
    try:
        engine = create_engine(uri, connect_args=args, poolclass=NullPool)
    except (ImportError, ModuleNotFoundError) as e:
        alt = " (psycopg 3 is installed: write postgresql+psycopg://...)" if kind == "PostgreSQL" and \
            _installed("psycopg") else ""
        return (f"tracking.uri: the Python driver for {shown(uri).split('://')[0]} is not installed ({e}): install "
                f"it (e.g. pip install psycopg2-binary for postgresql://){alt}, or run with tracking=local")
    except Exception as e:
        return f"tracking.uri: {shown(uri)!r} is not usable ({_first_line(e)})"
    try:
        with engine.connect():
            return None
    except Exception as e:
        return (f"tracking.uri: {where} refused the connection: {_first_line(e.__cause__ or e)}. Check the user, "
                f"password and database name in tracking.uri (the database must exist: createdb), or run with "
                f"tracking=local")
    finally:
        engine.dispose()


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


RESERVE_BYTES = 1 << 18  # kept free beside a SQLite store, so that runs can still be closed when its disk fills up


def make_reserve(db: Path) -> Path | None:
    """A file of RESERVE_BYTES next to the store (created once, kept): when the disk fills up, deleting it gives SQLite
    the room to close the runs as FAILED instead of leaving them RUNNING. None if there is no room for it."""
    path = db.with_name(f".{db.name}.reserve")
    try:
        if path.stat().st_size >= RESERVE_BYTES:
            return path
    except OSError:
        pass
    try:
        with open(path, "wb") as f:
            try:
                os.posix_fallocate(f.fileno(), 0, RESERVE_BYTES)
            except (AttributeError, OSError):  # a file system without fallocate: real bytes
                f.write(b"\0" * RESERVE_BYTES)
        return path
    except OSError:
        path.unlink(missing_ok=True)
        return None
