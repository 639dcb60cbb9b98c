"""Fault injection on real runs: SIGKILL at random points of the real tiny recipe (torch training, ONNX export, int8
quantization, evaluation, benchmark subprocess, MLflow logging, publishing, summary) and of a real sweep, each kill
followed by a re-run of the same command. After every re-run: no corrupt cache entry, no MLflow run left RUNNING, and
every run folder that has a summary.json holds exactly the bytes it records (`pipeline.cli.verify`).

RELIABILITY_FAULT_KILLS / RELIABILITY_FAULT_SWEEP_KILLS change the counts (3 and 2), RELIABILITY_SEED the sequence.
The kill moments are stratified over the run's span (one inside each slice, rel_helpers.kill_fractions), so a few
kills reach every phase a uniform draw needs many more for. Half land in runs whose stages are cached (MLflow logging,
publishing, summary: the parts a kill most easily corrupts), half in fresh runs, while stages compute.
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
from rel_helpers import cache_state, kill_fractions, mlflow_runs, write_images
from pipeline.core.runfiles import verify_run

SEED = int(os.environ.get("RELIABILITY_SEED", "7"))
KILLS = int(os.environ.get("RELIABILITY_FAULT_KILLS", "3"))
SWEEP_KILLS = int(os.environ.get("RELIABILITY_FAULT_SWEEP_KILLS", "2"))
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _args(photos: Path, outputs: Path) -> list[str]:
    return ["recipe=tiny_int8", "data=imagefolder", f"data.path={photos}", "model.input_size=16",
            "stages.train.batch_size=8", "stages.quantize.calibration_samples=8", "stages.benchmark.iterations=3",
            f"paths.outputs={outputs}"]


def _run(cmd: list[str], timeout: float = 900) -> tuple[subprocess.CompletedProcess, float]:
    t = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=ENV)
    return out, time.perf_counter() - t


def _kill_after(cmd: list[str], delay: float) -> bool:
    """Start `cmd` in its own process group and SIGKILL the whole group (benchmark subprocesses too) after `delay` s;
    False if it finished first."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env=ENV)
    try:
        proc.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return True


def _check(outputs: Path) -> dict:
    """The three promises; returns counts for the report."""
    state = cache_state(outputs)
    assert state["corrupt"] == [], f"corrupt cache entries: {state['corrupt']}"
    running = [r.info.run_name for r in mlflow_runs(outputs) if r.info.status == "RUNNING"]
    assert running == [], f"MLflow runs left RUNNING: {running}"
    folders = sorted(p for p in (outputs / "runs").glob("*/*") if p.is_dir()) if (outputs / "runs").is_dir() else []
    checked = [d for d in folders if (d / "summary.json").exists()]
    bad = {str(d): verify_run(d) for d in checked}
    assert {d: p for d, p in bad.items() if p} == {}
    for d in checked:
        assert all(a.get("sha256") for a in json.loads((d / "summary.json").read_text())["artifacts"]), d
    return {"entries": len(state["valid"]), "folders": len(checked), "unfinished": len(folders) - len(checked)}


def _tally(results: dict, key: str, kills: int, reruns: int, counts: dict) -> None:
    results.setdefault("fault", {})[key] = {"kills": kills, "reruns": reruns, **counts}


@pytest.mark.slow
def test_sigkill_at_random_points_of_a_real_run(tmp_path, reliability_results):
    photos = write_images(tmp_path / "photos", {"cat": 6, "dog": 6, "owl": 6})
    outputs = tmp_path / "outputs"
    base = [sys.executable, "-m", "pipeline", *_args(photos, outputs)]
    first, span_full = _run([*base, "seed=0"])
    assert first.returncode == 0, first.stderr[-3000:]
    again, span_reused = _run([*base, "seed=0"])
    assert again.returncode == 0, again.stderr[-3000:]
    rng = random.Random(SEED)
    moments = [(True, f) for f in kill_fractions(KILLS - KILLS // 2, rng)] + \
              [(False, f) for f in kill_fractions(KILLS // 2, rng)]
    kills = reruns = attempts = 0
    while kills < KILLS:
        attempts += 1
        assert attempts <= 3 * KILLS, "runs keep finishing before their kill: the calibrated spans are off"
        fresh, fraction = moments[(attempts - 1) % len(moments)]
        seed = 1000 + attempts if fresh else 0
        span = span_full if fresh else span_reused
        killed = _kill_after([*base, f"seed={seed}"], fraction * span)
        out, _ = _run([*base, f"seed={seed}"])  # the re-run completes ...
        reruns += 1
        assert out.returncode == 0, out.stderr[-3000:]
        counts = _check(outputs)  # ... and leaves everything whole
        kills += killed
    _tally(reliability_results, "run", kills, reruns, counts)
    print(f"\nfault injection: {kills} SIGKILLs of a real tiny run (spans {span_full:.0f} s computing, "
          f"{span_reused:.0f} s reusing), {reruns} re-runs: {counts}")


@pytest.mark.slow
def test_sigkill_at_random_points_of_a_real_sweep(tmp_path, reliability_results):
    photos = write_images(tmp_path / "photos", {"cat": 6, "dog": 6, "owl": 6})
    outputs = tmp_path / "outputs"
    sweep = [sys.executable, "-m", "pipeline", "-m", *_args(photos, outputs), "seed=0,1"]
    first, span_full = _run(sweep)
    assert first.returncode == 0, first.stderr[-3000:]
    # the kills land in re-runs, whose stages are cached: time one, so a kill falls inside it, not after its end
    again, span = _run(sweep)
    assert again.returncode == 0, again.stderr[-3000:]
    moments = kill_fractions(SWEEP_KILLS, random.Random(SEED + 1))
    kills = reruns = attempts = 0
    while kills < SWEEP_KILLS:
        attempts += 1
        assert attempts <= 3 * SWEEP_KILLS, "sweeps keep finishing before their kill: the calibrated span is off"
        killed = _kill_after(sweep, moments[(attempts - 1) % len(moments)] * span)
        out, _ = _run(sweep)
        reruns += 1
        assert out.returncode == 0, out.stderr[-3000:]
        counts = _check(outputs)
        parents = [r for r in mlflow_runs(outputs) if r.data.tags.get("sweep.role") == "parent"]
        assert parents and all(r.info.status in ("FINISHED", "KILLED") for r in parents)
        kills += killed
    _tally(reliability_results, "sweep", kills, reruns, counts)
    print(f"\nfault injection: {kills} SIGKILLs of a real 2-job sweep (spans {span_full:.0f} s computing, {span:.0f} s "
          f"reusing), {reruns} re-runs: {counts}")
