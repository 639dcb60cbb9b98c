"""Records you can trust: a cache entry is checked whole (its metadata too), the registry holds each model once and
only champions that beat chance, sweeps and runs never share a folder, and a signal at any moment ends the run with
a message, the right MLflow status and a whole summary.json or none. Stub stages where the real models add nothing."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from rel_helpers import cache_state, compose_stub, outcome

FAST = ("stages.a.seconds=0", "stages.b.seconds=0", "stages.c.seconds=0", "stages.d.seconds=0")


def _chain(outputs: Path, *extra: str):
    return outcome(compose_stub(outputs, "recipe=stub_chain", "tracking=none", *FAST, *extra))


def _verify(*paths: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli.verify", *map(str, paths)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def _entry(outputs: Path, summary: dict, stage: str) -> Path:
    key = next(s["cache_key"] for s in summary["stages"] if s["name"] == stage)
    return outputs / "cache" / "entries" / key


@pytest.mark.parametrize("field", ["metrics", "about", "info", "components", "created"])
@pytest.mark.slow
def test_edited_entry_metadata_is_a_miss_that_names_the_field(tmp_path, field):
    """A flipped number in entry.json (a metric, a finding such as accuracy ...) is not believed: the read says which
    entry and which field, the stage runs again, and `pipeline.cli.verify` reports the same before the re-run."""
    outputs = tmp_path / "outputs"
    code, msg, first = _chain(outputs)
    assert code == 0, msg
    task = "report[b]"
    entry = _entry(outputs, first, task)
    manifest = json.loads((entry / "entry.json").read_text())
    if field == "metrics":
        manifest["metrics"]["bytes"] = 1.0
    elif field == "about":
        manifest["about"]["b"]["bytes"] = 7
    elif field == "info":
        manifest["info"]["planted"] = "x"
    elif field == "components":
        manifest["components"]["params"]["seconds"] = 99.0
    else:
        manifest["created"] = 0
    (entry / "entry.json").chmod(0o644)
    (entry / "entry.json").write_text(json.dumps(manifest))

    v = _verify(outputs / "cache")
    assert v.returncode == 1 and entry.name[:16] in v.stdout and repr(field) in v.stdout, v.stdout
    run_dir = Path(first["run_dir"])
    v = _verify(run_dir)  # the run folder's check includes the entries its stages used
    assert v.returncode == 1 and task in v.stdout and repr(field) in v.stdout, v.stdout

    code, msg, second = _chain(outputs)
    assert code == 0, msg
    rec = {s["name"]: s for s in second["stages"]}
    assert rec[task]["status"] == "ran"
    assert "failed its integrity check" in rec[task]["reason"] and repr(field) in rec[task]["reason"]
    assert {rec[n]["status"] for n in "abcd"} == {"reused"}
    assert second["artifacts"] and cache_state(outputs)["corrupt"] == []
    assert _verify(outputs / "cache").returncode == 0


def test_edited_metrics_never_reach_the_summary(tmp_path):
    """The measured number comes back after the rebuild, not the edited one."""
    outputs = tmp_path / "outputs"
    code, msg, first = _chain(outputs)
    assert code == 0, msg
    entry = _entry(outputs, first, "report[d]")
    manifest = json.loads((entry / "entry.json").read_text())
    real = manifest["metrics"]["bytes"]
    manifest["metrics"]["bytes"] = real * 10
    (entry / "entry.json").chmod(0o644)
    (entry / "entry.json").write_text(json.dumps(manifest))
    code, msg, second = _chain(outputs)
    assert code == 0, msg
    assert {s["name"]: s for s in second["stages"]}["report[d]"]["metrics"]["bytes"] == real


def test_edited_summary_json_is_reported_by_verify(tmp_path):
    outputs = tmp_path / "outputs"
    code, msg, first = _chain(outputs)
    assert code == 0, msg
    run_dir = Path(first["run_dir"])
    assert _verify(run_dir).returncode == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["status"] = "success" if summary["status"] != "success" else "failed"
    (run_dir / "summary.json").write_text(json.dumps(summary))
    v = _verify(run_dir)
    assert v.returncode == 1 and "summary.json was edited" in v.stdout, v.stdout
    assert _verify(outputs).returncode == 1  # an outputs folder: its cache and every run folder
    assert _verify(tmp_path / "nowhere").returncode == 2


# --- signals at any moment: a whole outcome, never a mix ------------------------------------------------------------
def _signal_when(tmp_path: Path, sig: int, line: str, delay: float, *extra: str) -> tuple[int, str, Path]:
    """Run the stub chain through the command line (local MLflow store, registry on), send `sig` `delay` s after
    `line` appears in its pipeline.log; return (exit status, console output, outputs)."""
    import os
    import signal as signal_mod
    import time

    from rel_helpers import stub_cmd

    outputs = tmp_path / "outputs"
    proc = subprocess.Popen(stub_cmd("recipe=stub_chain", f"paths.outputs={outputs}", *FAST, *extra), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal_mod.signal(signal_mod.SIGINT, signal_mod.SIG_DFL))
    deadline = time.time() + 240
    while True:
        logs = list((outputs / "runs").glob("*/*/pipeline.log"))
        if logs and line in logs[0].read_text():
            break
        assert proc.poll() is None and time.time() < deadline, (proc.stdout.read() if proc.stdout else "")[-3000:]
        time.sleep(0.02)
    time.sleep(delay)
    sent = proc.poll() is None
    if sent:
        os.kill(proc.pid, sig)
    out, _ = proc.communicate(timeout=240)
    if not sent:  # the run was over before the signal's moment: a finished run, said so in the output checked below
        out += f"\n(test: the run finished before {signal_mod.Signals(sig).name} was due; it was not sent)"
    return proc.returncode, out, outputs


def _check_whole(rc: int, out: str, outputs: Path, sig: int) -> str:
    """The run ended one way or the other, consistently in every record. Returns its status."""
    from mlflow.tracking import MlflowClient

    from rel_helpers import mlflow_runs

    (run_dir,) = list((outputs / "runs").glob("*/*"))
    summary_file = run_dir / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else None  # whole JSON, or none
    runs = mlflow_runs(outputs)
    assert "RUNNING" not in [r.info.status for r in runs], ([(r.info.run_name, r.info.status, r.data.tags.get("mlflow.parentRunId")) for r in runs], out[-4000:])
    parent = next((r for r in runs if "mlflow.parentRunId" not in r.data.tags and "sweep.role" not in r.data.tags),
                  None)  # (none: the signal came before the run was created in MLflow)
    client = MlflowClient(f"sqlite:///{outputs / 'mlflow.db'}")
    versions = [v for m in client.search_registered_models() for v in client.search_model_versions(f"name='{m.name}'")
                if parent is not None and v.tags.get("pipeline_run_id") == parent.info.run_id]
    name = {2: "SIGINT", 15: "SIGTERM", 1: "SIGHUP"}[sig]
    if rc == 128 + sig:
        assert parent is None or parent.info.status == "KILLED", parent.info.status
        assert summary is None or summary["status"] == "killed", summary and summary["status"]
        assert versions == [], "a killed run registered a model version"
        assert f"interrupted by {name}" in out, out[-3000:]
        return "killed"
    assert rc == 0, out[-3000:]
    assert parent.info.status == "FINISHED" and summary["status"] == "success"
    said = (f"{name} arrived while the finished run was being recorded" in out
            or f"{name} arrived after the run was recorded" in out
            or f"the run finished before {name} was due" in out)
    # otherwise the signal landed in the process's exit, after every record was closed, where it is ignored: the
    # records above are whole, and the exit status is the run's own
    return "success" if said else "success (signal ignored during exit)"


@pytest.mark.parametrize("delay", [0.0, 0.3, 1.0])
@pytest.mark.slow
def test_sigterm_after_the_last_stage_ends_whole(tmp_path, delay):
    import signal as signal_mod

    rc, out, outputs = _signal_when(tmp_path, signal_mod.SIGTERM, "✔ report[d]", delay)
    print("outcome:", _check_whole(rc, out, outputs, signal_mod.SIGTERM))


@pytest.mark.parametrize("sig", ["SIGINT", "SIGHUP"])
@pytest.mark.slow
def test_other_signals_while_a_stage_runs_end_killed(tmp_path, sig):
    import signal as signal_mod

    signum = getattr(signal_mod, sig)
    rc, out, outputs = _signal_when(tmp_path, signum, "▶ b", 0.1, "stages.b.seconds=3")
    assert _check_whole(rc, out, outputs, signum) == "killed"
    summary = json.loads(next((outputs / "runs").glob("*/*/summary.json")).read_text())
    assert f"interrupted by {sig} while stage 'b' ran" in summary["error"]


# --- sweep and run folders: one per invocation ---------------------------------------------------------------------
def test_sweeps_composed_in_the_same_second_get_their_own_folders(tmp_path):
    """The folder a sweep writes job.json, multirun.yaml and its comparison to is new for each sweep, even when two
    start in the same second (the time alone named it)."""
    import time

    outputs = tmp_path / "outputs"
    for _ in range(20):  # until two compositions land in the same second
        a = str(compose_stub(outputs, "recipe=stub_chain").hydra.sweep.dir)
        b = str(compose_stub(outputs, "recipe=stub_chain").hydra.sweep.dir)
        stamp = lambda d: Path(d).name[:19]
        if stamp(a) == stamp(b):
            break
        time.sleep(0.1)
    assert stamp(a) == stamp(b) and a != b, (a, b)


def test_concurrent_sweeps_keep_their_own_records(tmp_path):
    from rel_helpers import stub_cmd

    outputs = tmp_path / "outputs"
    args = ["-m", "recipe=stub_chain", "tracking=none", *FAST, f"paths.outputs={outputs}"]
    procs = [subprocess.Popen(stub_cmd(*args, f"stages.a.value={v}"), cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for v in ("1,2", "3,4")]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[-2000:] for o in outs]
    dirs = sorted((outputs / "multirun").iterdir())
    assert len(dirs) == 2
    seen = set()
    for d in dirs:
        jobs = [json.loads(p.read_text()) for p in d.glob("*/job.json")]
        assert len(jobs) == 2 and len({j["sweep"] for j in jobs}) == 1 and (d / "multirun.yaml").is_file()
        seen |= {o for j in jobs for o in j["overrides"] if o.startswith("stages.a.value=")}
    assert seen == {f"stages.a.value={v}" for v in "1234"}  # no job's record overwrote another's


@pytest.mark.bad_input
def test_a_sweep_never_writes_into_an_existing_folder(tmp_path):
    from rel_helpers import run_stub_cli

    taken = tmp_path / "taken"
    (taken / "0").mkdir(parents=True)
    (taken / "0" / "job.json").write_text('{"job": 0, "mine": true}')
    p = run_stub_cli("-m", "recipe=stub_chain", "tracking=none", *FAST, "stages.a.value=1,2",
                     f"paths.outputs={tmp_path / 'outputs'}", f"hydra.sweep.dir={taken}")
    assert p.returncode == 2, p.stdout[-2000:] + p.stderr[-2000:]
    assert "already exists" in p.stderr and "hydra.sweep.dir" in p.stderr
    assert json.loads((taken / "0" / "job.json").read_text())["mine"] is True


def test_plan_of_a_sweep_writes_nothing(tmp_path):
    """`--plan -m ...` prints each job's plan; no MLflow sweep run, no sweep folder, no job.json, nothing at all."""
    from rel_helpers import assert_nothing_written, run_stub_cli

    outputs = tmp_path / "outputs"
    p = run_stub_cli("--plan", "-m", "recipe=stub_chain", "tracking=local", "stages.a.value=1,2",
                     f"paths.outputs={outputs}")
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert p.stdout.count("nothing runs; drop --plan to run it") == 2
    assert_nothing_written(outputs)


def test_entry_without_entry_json_or_with_a_fifo_is_named_not_read(tmp_path):
    """Never blocked reading a FIFO, never following a link: both are named, and the stage rebuilt."""
    import os

    from pipeline.core.cache import Cache

    outputs = tmp_path / "outputs"
    code, msg, first = _chain(outputs)
    assert code == 0, msg
    a, b = _entry(outputs, first, "a"), _entry(outputs, first, "b")
    (a / "entry.json").unlink()
    (b / "out" / "model.bin").chmod(0o644)
    (b / "out" / "model.bin").unlink()
    os.mkfifo(b / "out" / "model.bin")
    cache = Cache(outputs / "cache")
    assert "has no entry.json" in cache.inspect(a.name)[1]
    assert "not a regular file" in cache.inspect(b.name)[1]
    run_dir = Path(first["run_dir"])
    (run_dir / "artifacts" / "c" / "model.bin").chmod(0o644)
    (run_dir / "artifacts" / "c" / "model.bin").unlink()
    os.mkfifo(run_dir / "artifacts" / "c" / "model.bin")
    v = _verify(run_dir)  # (returns: the FIFO is named, not read)
    assert v.returncode == 1 and "not a regular file" in v.stdout, v.stdout
    code, msg, second = _chain(outputs)
    assert code == 0, msg
    assert {s["name"]: s["status"] for s in second["stages"]}["a"] == "ran"


@pytest.mark.slow
def test_sigterm_at_random_moments_always_ends_whole(tmp_path):
    """SIGTERM at random moments of a whole run (start-up, stages, logging, registering, closing): every outcome is
    one of the two whole ones."""
    import os
    import random
    import signal as signal_mod
    import time

    from rel_helpers import stub_cmd

    rng = random.Random(int(os.environ.get("RELIABILITY_SEED", "7")))
    seen = {"killed": 0, "success": 0, "before": 0}
    for i in range(int(os.environ.get("RELIABILITY_SIGTERMS", "4"))):
        outputs = tmp_path / f"o{i}"
        proc = subprocess.Popen(stub_cmd("recipe=stub_chain", f"paths.outputs={outputs}", "stages.a.seconds=0.3",
                                         "stages.b.seconds=0.3", "stages.c.seconds=0", "stages.d.seconds=0"),
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(rng.uniform(2, 25))
        if proc.poll() is None:
            os.kill(proc.pid, signal_mod.SIGTERM)
        out, _ = proc.communicate(timeout=240)
        if not list((outputs / "runs").glob("*/*")):  # before the run had a folder
            assert proc.returncode in (143, 0) and ("nothing ran" in out or proc.returncode == 0), out[-2000:]
            seen["before"] += 1
            continue
        if proc.returncode == 0 and "arrived" not in out:
            continue  # finished before the signal
        seen[_check_whole(proc.returncode, out, outputs, signal_mod.SIGTERM)] += 1
    print("\noutcomes:", seen)


@pytest.mark.parametrize("delay", [0.3, 3.0])
@pytest.mark.slow
def test_sigterm_while_starting_says_nothing_ran(tmp_path, delay):
    """While Python imports and Hydra composes: a message, exit 143, nothing written."""
    import os
    import signal as signal_mod
    import time

    outputs = tmp_path / "outputs"
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "recipe=tiny_int8", f"paths.outputs={outputs}"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    time.sleep(delay)
    logs = list((outputs / "runs").glob("*/*/pipeline.log"))
    os.kill(proc.pid, signal_mod.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    if logs:  # (a very fast machine got to the run itself: covered by the tests above)
        pytest.skip("the run had started")
    assert proc.returncode == 143 and "interrupted by SIGTERM" in out and "nothing ran" in out, out[-2000:]
    assert "Traceback" not in out
    assert not (outputs / "runs").exists() and not (outputs / "cache").exists()  # (the MLflow store may be open)
