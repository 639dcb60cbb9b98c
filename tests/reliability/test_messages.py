"""Failures that name their real cause and a fix that works: a .tflite with a custom operator (refused at plan time,
never called corrupt, never pointing at a cache folder), a database URI that refuses connections (named as the
database, not as an MLflow server), a disk that fills while MLflow logs (one line on the console, the library's
tracebacks in pipeline.log, every run closed FAILED)."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, free_port
from model_files import tflite
from rel_helpers import assert_nothing_written, mounted_tmpfs, compose_stub, outcome

pytestmark = pytest.mark.bad_input
FAST = ("stages.a.seconds=0", "stages.b.seconds=0", "stages.c.seconds=0", "stages.d.seconds=0")


def _import_cfg(outputs: Path, model: Path):
    cfg = compose_stub(outputs, "recipe=stub_chain", "tracking=local")
    cfg.stages = {"imported": {"type": "import_model", "path": str(model)}, "evaluate": {"type": "evaluate"}}
    return cfg


def test_tflite_with_a_custom_operator_is_refused_at_plan_time(tmp_path):
    model = tflite(tmp_path / "detector.tflite", shape=(1, 16, 16, 3), custom="MyCustomNms")
    outputs = tmp_path / "outputs"
    code, msg, _ = outcome(_import_cfg(outputs, model))
    assert code == 2, msg
    assert "'detector.tflite'" in msg and "custom operator(s) 'MyCustomNms'" in msg, msg
    assert "TFLITE_BUILTINS" in msg and "corrupt" not in msg and "cache" not in msg and "tmp" not in msg.lower()
    assert_nothing_written(outputs)


def test_runtime_error_of_a_custom_operator_names_the_users_file(tmp_path):
    """Should such a file reach LiteRT anyway, the error is the operator, named by the user's file name."""
    from pipeline.runtimes import tflite_rt

    work = tmp_path / "cache" / "tmp" / "abc123"  # where a stage's copy lives while it runs
    work.mkdir(parents=True)
    model = tflite(work / "model.tflite", custom="MyCustomNms")
    with pytest.raises(ValueError) as e:
        tflite_rt.load(model, {"imported_from": "detector.tflite"}, 1)
    msg = str(e.value)
    assert "'detector.tflite'" in msg and "'MyCustomNms'" in msg and "corrupt" not in msg
    assert str(tmp_path) not in msg and "cache.force" not in msg


@pytest.mark.parametrize("scheme", ["postgresql", "postgresql+psycopg", "mysql"])
def test_a_database_that_refuses_connections_is_named_as_the_database(tmp_path, scheme):
    port = free_port()  # nothing listens there
    outputs = tmp_path / "outputs"
    uri = f"{scheme}://mlflow:s3cret@127.0.0.1:{port}/runs"
    code, msg, _ = outcome(compose_stub(outputs, "recipe=stub_chain", "tracking=server", f"tracking.uri={uri}"))
    assert code == 2, msg
    kind = "MySQL" if scheme == "mysql" else "PostgreSQL"
    assert f"the {kind} database 'runs' at 127.0.0.1:{port} cannot be reached (Connection refused)" in msg, msg
    assert "not an MLflow server" in msg and "mlflow server" not in msg and "s3cret" not in msg
    assert_nothing_written(outputs)


# --- a disk that fills up while MLflow logs ------------------------------------------------------------------------


def _fill(disk: Path, leave: int) -> Path:
    """Fill `disk` with a file, then give back `leave` bytes."""
    filler = disk / "filler"
    with open(filler, "wb") as f:
        with contextlib.suppress(OSError):
            while True:
                f.write(b"x" * 65536)
                f.flush()
    os.truncate(filler, max(0, filler.stat().st_size - leave))
    return filler


@pytest.mark.slow
def test_disk_full_while_logging_is_one_line_and_every_run_closes_failed(tmp_path):
    from rel_helpers import run_stub_cli

    with mounted_tmpfs(tmp_path / "small", "size=3m") as disk:
        outputs = tmp_path / "outputs"
        args = ["recipe=stub_chain", *FAST, f"paths.outputs={outputs}", f"tracking.uri=sqlite:///{disk}/mlflow.db"]
        first = run_stub_cli(*args, "stages.a.salt=1")
        assert first.returncode == 0, first.stdout[-3000:]
        _fill(disk, 60_000)  # the store's disk fills up (another program, a big artifact ...)
        p = run_stub_cli(*args, "stages.a.salt=2")
        out = p.stdout + p.stderr
        assert p.returncode == 1, out[-3000:]
        assert "Traceback" not in out and "sqlalchemy" not in out.lower(), out[-3000:]
        assert sum("is full" in line for line in out.splitlines()) == 1, out  # one line says it
        assert f"the disk holding {disk} is full" in out and "tracking=none" in out
        assert "went to" in out and "pipeline.log only" in out  # where the library's tracebacks are
        log = max((outputs / "runs").glob("*/*/pipeline.log"), key=lambda q: q.stat().st_mtime).read_text()
        assert "database or disk is full" in log
        runs = mlflow_runs_at(disk)
        assert "RUNNING" not in {s for _, s in runs}, runs
        assert sum(s == "FAILED" for _, s in runs) >= 1


def mlflow_runs_at(disk: Path) -> list[tuple[str, str]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{disk}/mlflow.db")
    exps = [e.experiment_id for e in client.search_experiments()]
    return [(r.info.run_name, r.info.status) for r in client.search_runs(exps, max_results=1000)]


@pytest.mark.slow
def test_runs_close_failed_on_a_disk_with_no_byte_left(tmp_path):
    """A run open when the last byte goes: the room kept beside the store (its reserve) closes it FAILED."""
    here = Path(__file__).resolve().parent
    with mounted_tmpfs(tmp_path / "small", "size=3m") as disk:
        code = f"""
import sys; sys.path[:0] = {[str(here), str(here.parent), str(ROOT)]!r}
from pathlib import Path
from pipeline.tracking import tracker as tracking
import test_messages as t
disk = Path({str(disk)!r})
tr = tracking.Tracker(f"sqlite:///{{disk}}/mlflow.db", "x", disk / "art")
from pipeline.tracking.stores import RESERVE_BYTES
assert (disk / ".mlflow.db.reserve").stat().st_size == RESERVE_BYTES
tr.start("run", {{}}, {{}})
t._fill(disk, 0)
try:
    tr.log_params(tr.run_id, {{f"p{{i}}": "x" * 400 for i in range(400)}})
except tracking.TrackingError as e:
    print("logging:", e)
tr.end("FAILED")
print("closed")
"""
        p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0 and "closed" in p.stdout, (p.stdout + p.stderr)[-3000:]
        assert "is full" in p.stdout
        assert mlflow_runs_at(disk) == [("run", "FAILED")]


# --- device.connection and the words handed to ssh and the device's shell ------------------------------------------
@pytest.mark.parametrize("field,value,words", [
    ("connection", "ssh://-oProxyCommand=sh@127.0.0.1", "user '-oProxyCommand=sh' is not a user name"),
    ("connection", "ssh://pi@-oProxyCommand=sh", "host '-oproxycommand=sh' is not a host name"),
    ("connection", "ssh://pi@host;touch", "is not a host name"),
    ("connection", "ssh://p`id`@host", "is not a user name"),
    ("connection", "ssh://pi@host:0", "invalid port"),
    ("connection", "ssh://pi@ho\nst", "whitespace or control characters"),
    ("connection", "adb://-sX", "no valid serial"),
    ("remote_python", "python3;touch {marker}", "device.remote_python"),
    ("benchmark_model", "-oProxyCommand=x", "device.benchmark_model"),
    ("known_hosts", "/tmp/a b", "device.known_hosts"),
], ids=["user option", "host option", "host shell", "user shell", "port 0", "newline", "adb option", "python shell",
        "binary option", "known_hosts space"])
def test_option_or_shell_syntax_in_device_settings_is_refused_before_any_process(tmp_path, field, value, words):
    marker = tmp_path / "pwned"
    outputs = tmp_path / "outputs"
    cfg = compose_stub(outputs, "recipe=stub_chain", "tracking=local", "device=rpi4")
    if field != "connection":
        cfg.device.connection = "ssh://pi@127.0.0.1:1"
    cfg.device[field] = value.replace("{marker}", str(marker))
    code, msg, _ = outcome(cfg)
    assert code == 2 and words in msg, msg
    assert not marker.exists()
    assert_nothing_written(outputs)
