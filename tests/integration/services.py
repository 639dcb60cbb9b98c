"""Services for the integration tests, each on 127.0.0.1 and started/stopped by the test that needs it:
PostgreSQL (Debian package), an `mlflow server` backed by it with served artifacts, and a Ray head.

Only processes started here are stopped here, by process group (each is started in a new session)."""
from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Iterator

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.5)
    tail = log.read_text()[-3000:] if log and log.exists() else ""
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f} s\n{tail}")


def stop_group(proc: subprocess.Popen, timeout: float = 15) -> None:
    """SIGTERM the process group we started, then SIGKILL what is left of it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.time() + 10
    while time.time() < deadline:  # children (e.g. Ray's raylet, gcs_server) may outlive the leader briefly
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@contextlib.contextmanager
def postgresql() -> Iterator[str]:
    """A throw-away PostgreSQL cluster; yields a SQLAlchemy URI. As root, the server runs as the `postgres` user
    (initdb refuses root)."""
    bindir = postgres_bin()
    assert bindir, "PostgreSQL is not installed: apt-get install postgresql (make system-deps does it)"
    root = Path(tempfile.mkdtemp(prefix="i6pg-", dir="/tmp"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", free_port()
    env = {**os.environ, "LC_ALL": "C.UTF-8"}
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "mlflow", "--auth=trust", "-E", "UTF8"],
                   check=True, capture_output=True, env=env)
    log = root / "server.log"
    proc = subprocess.Popen([*as_user, str(bindir / "postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(port),
                             "-k", str(root)], stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True,
                            env=env)
    try:
        wait_port(port, 60, "PostgreSQL", proc, log)
        for _ in range(20):  # accepting connections may lag the listening socket
            r = subprocess.run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "mlflow", "mlflow"],
                               capture_output=True, text=True)
            if r.returncode == 0:
                break
            time.sleep(0.5)
        else:
            raise RuntimeError(f"createdb failed: {r.stderr}")
        yield f"postgresql://mlflow@127.0.0.1:{port}/mlflow"
    finally:
        stop_group(proc)
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def mlflow_server(backend_uri: str, workdir: Path) -> Iterator[str]:
    """`mlflow server` on the given backend store, serving artifacts from workdir/artifacts."""
    port = free_port()
    log = workdir / "mlflow-server.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", backend_uri, "--artifacts-destination", str(workdir / "artifacts"), "--workers", "1"],
        stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(uri + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("mlflow server did not start:\n" + log.read_text()[-3000:])
            time.sleep(0.5)
        yield uri
    finally:
        stop_group(proc)


@contextlib.contextmanager
def ray_head(pythonpath: Path) -> Iterator[str]:
    """A Ray head (`ray start --head --block`) on 127.0.0.1 with free ports and its own temp dir; yields its address.
    Workers import the package from `pythonpath` (a checkout need not be installed on the cluster's machines)."""
    tmp = Path(tempfile.mkdtemp(prefix="i6ray-", dir="/tmp"))  # short: Ray's socket paths have a length limit
    gcs = free_port()
    ports = {"--node-manager-port": free_port(), "--object-manager-port": free_port(),
             "--ray-client-server-port": free_port(), "--dashboard-agent-grpc-port": free_port(),
             "--dashboard-agent-listen-port": free_port(), "--metrics-export-port": free_port(),
             "--runtime-env-agent-port": free_port()}
    # Workers get a block below Linux's ephemeral range (32768+), where free_port()'s choices never fall.
    worker_lo = 20000 + (gcs % 100) * 120
    log = tmp / "head.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(pythonpath), os.environ.get("PYTHONPATH")])),
           "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.Popen(
        [str(VENV_BIN / "ray"), "start", "--head", "--block", f"--port={gcs}", "--node-ip-address=127.0.0.1",
         "--num-cpus=2", "--include-dashboard=false", f"--temp-dir={tmp}", "--disable-usage-stats",
         f"--min-worker-port={worker_lo}", f"--max-worker-port={worker_lo + 100}",
         *[f"{k}={v}" for k, v in ports.items()]],
        stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True, env=env, cwd=tmp)
    try:
        wait_port(gcs, 120, "Ray head (GCS)", proc, log)
        yield f"127.0.0.1:{gcs}"
    finally:
        stop_group(proc)
        shutil.rmtree(tmp, ignore_errors=True)
