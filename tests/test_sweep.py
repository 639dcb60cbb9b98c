"""Multirun end to end on the tiny recipe: jobs share the stage cache, are grouped under one MLflow sweep run, a failing
job does not stop the others, joblib workers on one cache compute a stage once, Optuna presets get the objectives."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import run_cli

pytestmark = pytest.mark.slow
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # several pipeline processes share 2 cores in CI: no thread oversubscription


def _job_summaries(outputs: Path, sweep_dir: Path) -> list[dict]:
    jobs = sorted((json.loads(p.read_text()) for p in sweep_dir.glob("*/job.json")), key=lambda j: j["job"])
    return [json.loads((Path(j["run_dir"]) / "summary.json").read_text()) for j in jobs if j.get("run_dir")]


def _sweep_dirs(outputs: Path) -> list[Path]:
    return sorted((outputs / "multirun").iterdir())


def _sweep_runs(client: MlflowClient, sweep_id: str):
    exp = client.get_experiment_by_name("tiny_int8")
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`sweep.id` = '{sweep_id}'")
    parents = [r for r in runs if r.data.tags["sweep.role"] == "parent"]
    jobs = [r for r in runs if r.data.tags["sweep.role"] == "job"]
    return parents, jobs


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sweep") / "outputs"


@pytest.fixture(scope="module")
def grid_sweep(shared):
    out = run_cli("-m", "recipe=tiny_int8", "device=host,pixel7", "stages.quantize.calibration_samples=16,32",
                  "stages.train.threads=1", f"paths.outputs={shared}", env=ONE_THREAD)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    return out


def test_grid_sweep_shares_cache_and_groups_runs(grid_sweep, shared):
    (sweep_dir,) = _sweep_dirs(shared)
    summaries = _job_summaries(shared, sweep_dir)
    assert len(summaries) == 4 and {s["status"] for s in summaries} == {"success"}
    status = lambda name: [next(st["status"] for st in s["stages"] if st["name"] == name) for s in summaries]
    assert sorted(status("train")) == ["ran", "reused", "reused", "reused"]  # upstream stages run once
    assert sorted(status("export")) == ["ran", "reused", "reused", "reused"]
    assert sorted(status("quantize")) == ["ran", "ran", "reused", "reused"]  # one per calibration size
    for s in summaries:
        assert s["objective"]["metrics"] == ["accuracy"] and s["gate"]["artifact"] == "quantize"

    jobs = [json.loads(p.read_text()) for p in sweep_dir.glob("*/job.json")]
    assert {j["status"] for j in jobs} == {"COMPLETED"} and len({j["sweep"] for j in jobs}) == 1
    sweep_id = jobs[0]["sweep"]
    client = MlflowClient(summaries[0]["mlflow"]["tracking_uri"])
    parents, job_runs = _sweep_runs(client, sweep_id)
    assert len(parents) == 1 and len(job_runs) == 4
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.data.metrics["jobs"] == 4
    assert parent.data.metrics["jobs_failed"] == 0
    for r in job_runs:
        assert r.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert "objective.accuracy" in r.data.metrics
    assert {r.data.tags["sweep.overrides"].split()[1] for r in job_runs} == {"device=host", "device=pixel7"}
    files = {f.path for f in client.list_artifacts(parent.info.run_id, "compare")}
    assert files == {"compare/leaderboard.png", "compare/leaderboard.html", "compare/leaderboard.json"}
    assert "top-1 %" in grid_sweep.stdout and "p50 ms (95% CI)" in grid_sweep.stdout  # the leaderboard is printed


def test_failing_job_does_not_stop_the_sweep(grid_sweep, shared):
    before = set(_sweep_dirs(shared))
    out = run_cli("-m", "recipe=tiny_int8", "device=host", "stages.quantize.calibration_samples=16",
                  "stages.quantize.method=bogus,minmax", "stages.train.threads=1", f"paths.outputs={shared}",
                  env=ONE_THREAD)
    text = out.stdout + out.stderr
    assert out.returncode == 1, text[-3000:]
    assert "job #0 invalid configuration" in text and "stages.quantize.method: must be one of" in text
    assert "1 job(s) finished, 1 failed" in text
    (sweep_dir,) = set(_sweep_dirs(shared)) - before
    jobs = sorted((json.loads(p.read_text()) for p in sweep_dir.glob("*/job.json")), key=lambda j: j["job"])
    assert [j["status"] for j in jobs] == ["FAILED", "COMPLETED"]  # the second job ran after the first failed
    client = MlflowClient(f"sqlite:///{shared / 'mlflow.db'}")
    parents, job_runs = _sweep_runs(client, jobs[0]["sweep"])
    assert parents[0].info.status == "FAILED" and parents[0].data.metrics["jobs_failed"] == 1
    assert [r.info.status for r in job_runs] == ["FINISHED"]  # the invalid job wrote nothing to MLflow


def test_optuna_preset_gets_the_objectives(grid_sweep, shared):
    before = set(_sweep_dirs(shared))
    out = run_cli("-m", "recipe=tiny_int8", "device=host", "+sweep=quant_search", "hydra.sweeper.n_trials=2",
                  "stages.train.threads=1", f"paths.outputs={shared}", env=ONE_THREAD)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    (sweep_dir,) = set(_sweep_dirs(shared)) - before
    result = (sweep_dir / "optimization_results.yaml").read_text()
    assert "solutions" in result and "stages.quantize.method" in result  # multi-objective: a Pareto set
    jobs = [json.loads(p.read_text()) for p in sweep_dir.glob("*/job.json")]
    assert len(jobs) == 2
    for j in jobs:
        acc, lat = j["objective"]
        assert 0 <= acc <= 1 and lat > 0
    summaries = _job_summaries(shared, sweep_dir)
    assert all(next(st for st in s["stages"] if st["name"] == "train")["status"] == "reused" for s in summaries)


def test_joblib_workers_on_one_cache_compute_a_stage_once(grid_sweep, shared):
    """Two joblib workers need the same new quantize key at once (train/export are cached): it is computed once, the
    other worker waits on the key's lock and reuses the result. Both log to one SQLite store."""
    before = set(_sweep_dirs(shared))
    out = run_cli("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "recipe=tiny_int8", "device=host,pixel7",
                  "stages.quantize.calibration_samples=24", "stages.train.threads=1", f"paths.outputs={shared}",
                  env=ONE_THREAD)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-4000:]
    assert "database is locked" not in text
    (sweep_dir,) = set(_sweep_dirs(shared)) - before
    summaries = _job_summaries(shared, sweep_dir)
    assert len(summaries) == 2 and {s["status"] for s in summaries} == {"success"}
    status = lambda name: sorted(next(st["status"] for st in s["stages"] if st["name"] == name) for s in summaries)
    assert status("train") == ["reused", "reused"]
    assert status("quantize") == ["ran", "reused"] and status("evaluate[quantize]") == ["ran", "reused"]
    assert status("benchmark") == ["ran", "ran"]  # the device differs: one benchmark each
