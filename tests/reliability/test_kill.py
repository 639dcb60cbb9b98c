"""Crash safety: SIGKILL at random moments never leaves a corrupt cache entry and the next run resumes, reusing what
had finished; SIGINT/SIGTERM close the MLflow run as KILLED and keep the finished stages.

The kill points use the stub chain (stages that write their files slowly, so kills land mid-write) through the real
command line with the embedded MLflow store, one moment inside each slice of a run's span so that ten reach every
phase; two more kill a real tiny run (train -> ONNX -> int8 -> evaluate -> benchmark). Set RELIABILITY_SEED to replay
a sequence, RELIABILITY_KILL_POINTS to change how many.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT
from rel_helpers import (cache_state, compose_stub, kill_fractions, mlflow_runs, outcome, run_stub_cli, stub_cmd,
                         write_images)

SEED = int(os.environ.get("RELIABILITY_SEED", "7"))
KILL_POINTS = int(os.environ.get("RELIABILITY_KILL_POINTS", "6"))


def _tally(results: dict, *, stub: int = 0, real: int = 0, survived: int = 0, corrupt: int = 0, resumed: int = 0):
    k = results.setdefault("kill", {"points": 0, "stub": 0, "real": 0, "survived": 0, "corrupt": 0, "resumed": 0})
    k["points"] += stub + real
    k["stub"] += stub
    k["real"] += real
    k["survived"] += survived
    k["corrupt"] += corrupt
    k["resumed"] += resumed


def _kill_after(cmd: list[str], delay: float, env: dict | None = None) -> tuple[bool, float]:
    """Start `cmd`, SIGKILL its whole process group after `delay` s. Returns (killed, seconds it ran): not killed if
    it finished first."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env={**os.environ, **(env or {})})
    try:
        proc.wait(timeout=delay)
        return False, time.perf_counter() - t
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return True, time.perf_counter() - t


def _check_resume(summary: dict, finished_before: set[str]) -> None:
    """Every stage whose entry survived the kill is reused; only the others run."""
    assert summary["status"] == "success"
    for s in summary["stages"]:
        assert s["status"] == ("reused" if s["cache_key"] in finished_before else "ran"), (s, finished_before)


@pytest.mark.slow
def test_sigkill_at_random_moments(tmp_path, reliability_results):
    outputs = tmp_path / "outputs"
    rng = random.Random(SEED)
    args = ["recipe=stub_chain", f"paths.outputs={outputs}"]
    t = time.perf_counter()
    first = run_stub_cli(*args, "stages.a.salt=calibrate")  # how long a whole run takes, start-up included
    span = time.perf_counter() - t
    assert first.returncode == 0, first.stderr[-3000:]
    landed = {"before any stage": 0, "between stages": 0, "inside a stage": 0}
    moments = kill_fractions(KILL_POINTS, rng)  # one moment inside each slice of the run: every phase is reached
    kills = corrupt = attempts = 0
    while kills < KILL_POINTS:  # a run that finishes before its kill moment does not count as a kill point
        attempts += 1
        assert attempts <= 3 * KILL_POINTS, "runs keep finishing before the kill: the calibrated span is off"
        salt = f"kill{attempts}"
        delay = moments[(attempts - 1) % len(moments)] * span
        killed, ran = _kill_after(stub_cmd(*args, f"stages.a.salt={salt}"), delay)
        if not killed:  # the machine got faster than when the span was measured
            span = ran
        state = cache_state(outputs)
        corrupt += len(state["corrupt"])
        assert state["corrupt"] == [], f"kill at {delay:.2f} s left corrupt entries {state['corrupt']}"
        before = set(state["valid"])
        cfg = compose_stub(outputs, "recipe=stub_chain", "tracking=local", f"stages.a.salt={salt}")
        code, msg, summary = outcome(cfg)  # the next run completes ...
        assert code == 0, msg
        _check_resume(summary, before)  # ... reusing exactly what had finished
        assert cache_state(outputs)["tmp"] == []  # and the killed run's half-written work folder is gone
        if killed:
            kills += 1
            reused = sum(s["status"] == "reused" for s in summary["stages"])
            landed["inside a stage" if state["tmp"] else "between stages" if reused else "before any stage"] += 1
    # the killed runs' MLflow runs were closed as KILLED by the runs after them: none is left RUNNING, none lost
    statuses = [r.info.status for r in mlflow_runs(outputs) if "mlflow.parentRunId" not in r.data.tags]
    assert "RUNNING" not in statuses
    assert statuses.count("FINISHED") >= attempts + 1
    _tally(reliability_results, stub=kills, survived=kills, corrupt=corrupt, resumed=attempts)
    print(f"\n{kills} SIGKILLs (seed {SEED}, run span {span:.1f} s) landed: {landed}")


@pytest.mark.slow
def test_sigkill_real_tiny_runs(tmp_path, reliability_results):
    """Two kills of the real tiny recipe (torch training, ONNX export, int8 quantization, benchmark subprocess)."""
    photos = write_images(tmp_path / "photos", {"cat": 6, "dog": 6, "owl": 6})
    outputs = tmp_path / "outputs"
    args = ["recipe=tiny_int8", "data=imagefolder", f"data.path={photos}", "model.input_size=16",
            "stages.train.batch_size=8", "stages.quantize.calibration_samples=8", f"paths.outputs={outputs}"]
    cmd = [sys.executable, "-m", "pipeline", *args]
    env = {"PYTHONPATH": str(ROOT)}
    rng = random.Random(SEED + 1)
    corrupt = kills = 0
    for delay in (rng.uniform(4, 20), rng.uniform(3, 15)):  # the second run reuses what the first finished
        kills += _kill_after(cmd, delay, env)[0]
        state = cache_state(outputs)
        corrupt += len(state["corrupt"])
        assert state["corrupt"] == []
    before = set(cache_state(outputs)["valid"])
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, env={**os.environ, **env})
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(sorted((outputs / "runs").rglob("summary.json"), key=lambda p: p.stat().st_mtime)[-1]
                         .read_text())
    _check_resume(summary, before)
    assert cache_state(outputs)["tmp"] == []
    assert "RUNNING" not in [r.info.status for r in mlflow_runs(outputs)]
    _tally(reliability_results, real=kills, survived=kills, corrupt=corrupt, resumed=1)
    print(f"\nreal tiny run: {len(before)} entries survived the kills and were reused")


def _interrupt(tmp_path: Path, sig: int) -> tuple[int, Path, list]:
    """Run the stub chain with a slow stage b, send `sig` once b has started; return (exit status, outputs, runs)."""
    outputs = tmp_path / "outputs"
    markers = tmp_path / "markers"
    markers.mkdir()
    proc = subprocess.Popen(stub_cmd("recipe=stub_chain", f"paths.outputs={outputs}", "stages.b.seconds=60",
                                     "stages.a.seconds=0"),
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "RELIABILITY_MARKERS": str(markers)},
                            # a shell's background job inherits SIGINT ignored, and Python then keeps ignoring it:
                            # give the child the default disposition a user's terminal gives it
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 300
    while not (markers / "b.started").exists():
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read()[-3000:] if proc.stdout else ""
        time.sleep(0.1)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=120)
    return proc.returncode, outputs, out


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
@pytest.mark.slow
def test_interrupt_closes_the_run_as_killed_and_keeps_finished_stages(tmp_path, sig, code):
    rc, outputs, out = _interrupt(tmp_path, sig)
    assert rc == code, out[-3000:]
    assert "finished stage(s) are cached" in out and "run the same command again to resume" in out
    summary = json.loads(next((outputs / "runs").rglob("summary.json")).read_text())
    assert summary["status"] == "killed"
    assert {s["name"]: s["status"] for s in summary["stages"]} == {"a": "ran", "b": "interrupted"}
    runs = mlflow_runs(outputs)
    parent = next(r for r in runs if r.info.run_id == summary["mlflow"]["run_id"])
    assert parent.info.status == "KILLED"
    assert "RUNNING" not in [r.info.status for r in runs]
    state = cache_state(outputs)
    assert state["corrupt"] == [] and state["tmp"] == [] and summary["stages"][0]["cache_key"] in state["valid"]
    # the next run picks up where it stopped
    code2, msg, again = outcome(compose_stub(outputs, "recipe=stub_chain", "tracking=local", "stages.a.seconds=0",
                                             "stages.b.seconds=0"))
    assert code2 == 0, msg
    assert {s["name"]: s["status"] for s in again["stages"]}["a"] == "reused"
