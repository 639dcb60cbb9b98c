"""Tracking under faults, against real stores: a real HTTP server on 127.0.0.1 whose /health answers while its API
hangs, real SQLite stores that are locked, on a full disk (a tmpfs mount, root only) or under odd outputs paths, real
processes that are killed. Every case ends with no MLflow run left RUNNING and a message naming the cause and the fix.
"""
from __future__ import annotations

import contextlib
import http.server
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import ROOT
from rel_helpers import assert_nothing_written, mounted_tmpfs, compose_stub, mlflow_runs, outcome
from pipeline.tracking import connection, tracker as tracking
from pipeline.core.errors import ConfigError
from pipeline.core.runner import TaskRecord

pytestmark = pytest.mark.bad_input


# --- a server whose /health answers and whose API hangs -----------------------------------------------------------
class HangingAPI:
    """/health: 200. GET experiments/get-by-name: a valid answer when `answer_lookup`; everything else: no answer
    until the server is stopped."""

    def __init__(self, answer_lookup: bool = False):
        self.release = threading.Event()
        release, lookup = self.release, answer_lookup

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, body: bytes, ctype="application/json"):
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if self.path.startswith("/health"):
                    return self._send(b"OK", "text/plain")
                if lookup and "experiments/get-by-name" in self.path:
                    return self._send(json.dumps({"experiment": {
                        "experiment_id": "1", "name": "x", "artifact_location": "mlflow-artifacts:/1",
                        "lifecycle_stage": "active"}}).encode())
                release.wait(120)

            do_POST = do_GET

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.uri = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hanging_api():
    s = HangingAPI()
    yield s
    s.close()


def test_health_answers_but_the_api_hangs_when_opening(hanging_api):
    assert tracking.check_server(hanging_api.uri, 2) is None  # the health check alone is fooled
    import mlflow.tracking  # noqa: F401  (imported before the clock starts: seconds on a loaded machine)

    t = time.perf_counter()
    with pytest.raises(ConfigError) as e:
        tracking.Tracker(hanging_api.uri, "x", None, timeout_s=2)
    elapsed = time.perf_counter() - t
    msg = str(e.value)
    assert elapsed < 2 + 1.5, f"took {elapsed:.1f} s"
    assert hanging_api.uri in msg and "did not answer get_experiment_by_name within 2 s" in msg
    assert "raise tracking.timeout_s" in msg and "tracking.fallback_to_local=true" in msg


def test_the_api_hangs_in_the_middle_of_a_run():
    server = HangingAPI(answer_lookup=True)
    try:
        tr = tracking.Tracker(server.uri, "x", None, timeout_s=1.5)  # the lookup answers ...
        t = time.perf_counter()
        with pytest.raises(tracking.TrackingError) as e:  # ... creating the run hangs
            tr.start("run", {"a": 1}, {})
        assert time.perf_counter() - t < 1.5 + 1.5
        assert f"{server.uri} did not answer create_run within 1.5 s" in str(e.value)
        assert e.value.exit_code == 1
    finally:
        server.close()


@pytest.mark.slow
def test_hanging_api_refuses_the_whole_run_in_time(tmp_path, hanging_api):
    outputs = tmp_path / "outputs"
    cfg = compose_stub(outputs, "recipe=stub_chain", "tracking=server", f"tracking.uri={hanging_api.uri}")
    assert cfg.tracking.timeout_s == 10
    import mlflow.tracking  # noqa: F401  (the clock measures waiting, not importing and planning)

    import reliability_stubs
    from pipeline import app

    app.prepare(cfg.copy(), stages=reliability_stubs.STAGES)
    t = time.perf_counter()
    code, msg, _ = outcome(cfg)
    assert code == 2, msg
    assert time.perf_counter() - t < 10 + 3  # the health check answers; the first API call is given up on at 10 s
    assert hanging_api.uri in msg and "did not answer" in msg
    assert_nothing_written(outputs)


@pytest.mark.parametrize("value", ["nan", "inf", "0", "-1"])
def test_timeout_that_is_not_a_positive_number(tmp_path, value):
    cfg = compose_stub(tmp_path / "outputs", "recipe=stub_chain", "tracking=local", f"tracking.timeout_s={value}")
    code, msg, _ = outcome(cfg)
    assert code == 2 and "tracking.timeout_s: must be a finite number > 0" in msg and "Traceback" not in msg, msg
    assert_nothing_written(tmp_path / "outputs")


# --- outputs paths that are URL syntax ------------------------------------------------------------------------
def _compose_at(outputs: Path, *overrides: str):
    """As compose_stub, with paths.outputs set after composing (Hydra's override grammar wants such paths quoted)."""
    cfg = compose_stub(None, *overrides)
    cfg.paths.outputs = str(outputs)
    return cfg


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("name", ["with space", "ünïcødé-输出", "hash#tag"])
@pytest.mark.slow
def test_odd_outputs_path_keeps_the_store_inside_it(tmp_path, name):
    outputs = tmp_path / name / "outputs"
    outputs.parent.mkdir()
    before = _tree(tmp_path)
    code, msg, summary = outcome(_compose_at(outputs, "recipe=stub_chain", "tracking=local", "stages.a.seconds=0",
                                             "stages.b.seconds=0", "stages.c.seconds=0", "stages.d.seconds=0"))
    assert code == 0, msg
    outside = {p for p in _tree(tmp_path) - before if not (tmp_path / p).resolve().is_relative_to(outputs)}
    assert outside == set(), f"written outside outputs/: {outside}"
    assert (outputs / "mlflow.db").is_file()
    assert tracking.sqlite_path(summary["mlflow"]["tracking_uri"]) == outputs / "mlflow.db"
    assert {r.info.status for r in mlflow_runs(outputs)} == {"FINISHED"}


@pytest.mark.parametrize("name", ["what?", "100%", "a?b#c%d"])
def test_outputs_path_a_sqlite_uri_cannot_carry_is_refused(tmp_path, name):
    outputs = tmp_path / name / "outputs"
    code, msg, _ = outcome(_compose_at(outputs, "recipe=stub_chain", "tracking=local"))
    assert code == 2, msg
    assert "paths.outputs" in msg and "which a SQLite URI cannot carry" in msg
    assert "paths.outputs=DIR without them" in msg and "tracking=none" in msg
    assert _tree(tmp_path) == set(), f"written although refused: {_tree(tmp_path)}"


def test_outputs_path_with_a_question_mark_runs_without_tracking(tmp_path):
    outputs = tmp_path / "what?" / "outputs"
    code, msg, _ = outcome(_compose_at(outputs, "recipe=stub_chain", "tracking=none", "stages.a.seconds=0",
                                       "stages.b.seconds=0", "stages.c.seconds=0", "stages.d.seconds=0"))
    assert code == 0, msg
    assert {p.split("/")[0] for p in _tree(tmp_path)} == {"what?"}


# --- a locked store -------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _locked(db: Path):
    """Another process's write transaction on the store (as a sqlite3 shell or a stuck writer holds it)."""
    holder = subprocess.Popen([sys.executable, "-c", f"""
import sqlite3, sys, time
con = sqlite3.connect({str(db)!r}, isolation_level=None)
con.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()
"""], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    try:
        yield
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


def _store(outputs: Path, timeout_s: float = 10.0) -> tracking.Tracker:
    outputs.mkdir(parents=True, exist_ok=True)
    return tracking.Tracker(tracking.local_uri(outputs), "x", outputs / "mlartifacts", timeout_s=timeout_s)


@pytest.mark.slow
def test_locked_store_when_opening_is_named_as_locked(tmp_path, monkeypatch):
    outputs = tmp_path / "outputs"
    _store(outputs)
    monkeypatch.setattr(connection, "LOCAL_MIN_DEADLINE_S", 3.0)  # (instead of 30 s, to keep the test short)
    with _locked(outputs / "mlflow.db"):
        with pytest.raises(ConfigError) as e:
            tracking.Tracker(tracking.local_uri(outputs), "x", outputs / "mlartifacts", timeout_s=1)
    msg = str(e.value)
    assert f"the store {outputs / 'mlflow.db'} is locked by another process" in msg
    assert "The store itself is fine" in msg and "mlflow server --backend-store-uri" in msg and "tracking=none" in msg
    assert "Repair" not in msg and "Move it away" not in msg


@pytest.mark.slow
def test_locked_store_while_logging(tmp_path, monkeypatch):
    outputs = tmp_path / "outputs"
    tr = _store(outputs, timeout_s=2)
    rid = tr.start("run", {}, {})
    monkeypatch.setattr(connection, "LOCAL_MIN_DEADLINE_S", 8.0)  # (instead of 30 s; SQLite waits 5 s per attempt)
    with _locked(outputs / "mlflow.db"):
        t = time.perf_counter()
        with pytest.raises(tracking.TrackingError) as e:
            tr.log_metrics(rid, {"m": 1.0})
        assert time.perf_counter() - t < 8 + 1.5
    assert "is locked by another process" in str(e.value) and "tracking=none" in str(e.value)
    tr.end("FAILED")  # the lock is gone: the run closes
    assert {r.info.status for r in mlflow_runs(outputs)} == {"FAILED"}


# --- a disk that fills while logging -------------------------------------------------------------------------


LOGGER = """
import sys
sys.path.insert(0, {root!r})
from pathlib import Path
from pipeline.tracking import connection, tracker as tracking
outputs = Path({outputs!r})
tr = tracking.Tracker(tracking.local_uri(outputs), "x", outputs / "mlartifacts")
rid = tr.start("run", {{}}, {{}})
with open(outputs / "filler", "wb") as f:  # the disk fills up (another program, a big stage output ...)
    try:
        while True:
            f.write(b"\\0" * 65536)
            f.flush()
    except OSError:
        pass
try:
    for i in range(200):
        tr.log_params(rid, {{f"p{{i}}.{{j}}": "x" * 500 for j in range(100)}})
except tracking.TrackingError as e:
    print("ERROR:", e, flush=True)
    try:
        tr.end("FAILED")
    except tracking.TrackingError as e2:
        print("END:", e2, flush=True)
    sys.exit(1)
print("no error", flush=True)
"""


def test_disk_full_while_logging_names_the_disk_and_the_next_run_closes_the_run(tmp_path):
    with mounted_tmpfs(tmp_path / "disk", "size=4m") as disk:
        outputs = disk / "outputs"
        outputs.mkdir()
        out = subprocess.run([sys.executable, "-c", LOGGER.format(root=str(ROOT), outputs=str(outputs))],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 1, out.stdout + out.stderr[-3000:]
        assert f"the disk holding {outputs} is full" in out.stdout, out.stdout
        assert "paths.outputs=DIR" in out.stdout and "tracking=none" in out.stdout
        assert "Traceback" not in out.stdout
        (outputs / "filler").unlink()  # space is back: the next run closes what the full disk left RUNNING
        tr = _store(outputs)
        tr.start("next", {}, {})
        tr.close_orphans()
        tr.end("FINISHED")
        statuses = sorted(r.info.status for r in mlflow_runs(outputs))
        assert "RUNNING" not in statuses and len(statuses) == 2, statuses


# --- runs closed on every path -------------------------------------------------------------------------------
def _rec(name: str, out: Path) -> TaskRecord:
    return TaskRecord(name=name, stage=name, type="rel_step", inputs=[], status="ran", cache_key="k" * 64,
                      reason="first run")


@pytest.mark.slow
def test_sigterm_while_logging_a_stage_closes_the_stage_run_killed(tmp_path):
    """The interrupt lands between the stage run's creation and its end: both it and the parent end KILLED.

    Run in a child interpreter, as in real life a SIGTERMed pipeline is one process: the MLflow call the interrupt
    abandons keeps its worker thread (the deadline wrapper's) until that process exits, and it must not outlive the
    test inside the test runner, sharing SQLite with the tests after it."""
    here = Path(__file__).resolve().parent
    code = (f"import sys; sys.path[:0] = {[str(here), str(here.parent), str(ROOT)]!r}\n"
            f"from pathlib import Path\nimport test_tracking_faults as t\nt._sigterm_scenario(Path({str(tmp_path)!r}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]


def _sigterm_scenario(tmp_path: Path) -> None:
    outputs = tmp_path / "outputs"
    tr = _store(outputs)
    tr.start("run", {}, {})
    files = tmp_path / "many"
    files.mkdir()
    for i in range(1500):  # logging these takes long enough for the signal to land inside log_stage
        (files / f"{i}.txt").write_text("x")
    rec = _rec("slow", files)
    rec.files = sorted(files.iterdir())

    def on_term(signum, frame):
        raise KeyboardInterrupt  # what pipeline/cli/run.py makes of SIGTERM

    old = signal.signal(signal.SIGTERM, on_term)
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM))
    try:
        timer.start()
        try:
            tr.log_stage(rec, None)
            raise AssertionError("the SIGTERM did not interrupt log_stage")
        except KeyboardInterrupt:
            pass
    finally:
        timer.cancel()
        signal.signal(signal.SIGTERM, old)
    tr.end("KILLED")
    runs = {r.info.run_name: r.info.status for r in mlflow_runs(outputs)}
    assert runs == {"run": "KILLED", "slow": "KILLED"}, runs


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_close_orphans_covers_every_case(tmp_path):
    outputs = tmp_path / "outputs"
    tr = _store(outputs)
    c = tr.client
    dead = {"pipeline.host": __import__("socket").gethostname(), "pipeline.pid": str(_dead_pid())}
    killed_run = c.create_run(tr.experiment_id, run_name="killed run", tags=dead).info.run_id
    killed_stage = c.create_run(tr.experiment_id, run_name="killed stage",
                                tags={**dead, tracking.PARENT_TAG: killed_run}).info.run_id
    ended = c.create_run(tr.experiment_id, run_name="ended parent").info.run_id
    c.set_terminated(ended, "KILLED")
    untagged_stage = c.create_run(tr.experiment_id, run_name="stage of an older version",
                                  tags={tracking.PARENT_TAG: ended}).info.run_id
    alive = c.create_run(tr.experiment_id, run_name="live run",
                         tags={**dead, "pipeline.pid": str(os.getpid())}).info.run_id
    other_host = c.create_run(tr.experiment_id, run_name="other host",
                              tags={"pipeline.host": "elsewhere", "pipeline.pid": "1"}).info.run_id
    tr.start("this run", {}, {})
    closed = set(tr.close_orphans())
    assert closed == {killed_run, killed_stage, untagged_stage}
    status = {r.info.run_name: r.info.status for r in mlflow_runs(outputs)}
    assert status["live run"] == status["other host"] == status["this run"] == "RUNNING"
    assert all(status[n] == "KILLED" for n in ("killed run", "killed stage", "stage of an older version"))
    tr.end("FINISHED")
    for rid in (alive, other_host):
        c.set_terminated(rid, "FINISHED")


def test_a_killed_sweep_parent_is_closed_by_the_next_run(tmp_path):
    """The sweep's launcher is SIGKILLed with its parent run open (start_parent tags it with the process)."""
    outputs = tmp_path / "outputs"
    _store(outputs)
    proc = subprocess.Popen([sys.executable, "-c", f"""
import sys, time
sys.path.insert(0, {str(ROOT)!r})
from pathlib import Path
from pipeline.tracking import connection, tracker as tracking
outputs = Path({str(outputs)!r})
tr = tracking.Tracker(tracking.local_uri(outputs), "x", outputs / "mlartifacts")
tr.start_parent("sweep 1", {{"sweep.role": "parent"}})
print("started", flush=True)
time.sleep(600)
"""], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "started"
    proc.kill()
    proc.wait()
    tr = _store(outputs)
    tr.start("next run", {}, {})
    assert len(tr.close_orphans()) == 1
    tr.end("FINISHED")
    assert {r.info.run_name: r.info.status for r in mlflow_runs(outputs)} == {"sweep 1": "KILLED",
                                                                            "next run": "FINISHED"}
