"""Scale-out on existing engines: PostgreSQL (Debian package) behind `mlflow server` with served artifacts, a Ray head,
all on 127.0.0.1 and started/stopped here; a 4-job sweep through hydra-ray-launcher; every check through MLflow's REST
API, as any other client of the server would see it."""
from __future__ import annotations

import json
import os
import secrets
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import services  # noqa: E402

from conftest import ROOT, run_cli  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.integration]

# Ray replaces 127.0.0.1 by the machine's interface address unless it runs in single-machine mode; this keeps every
# socket of the test on loopback. Ray >= 2.59 authenticates with a token (by default for local clusters): the head, its
# workers and the submitting process share a fresh one explicitly, so no token file in ~/.ray is read or written.
LOOPBACK_ONLY = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
                 "RAY_AUTH_TOKEN": secrets.token_hex(32)}


def _needs_postgres():
    if services.postgres_bin() is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not installed; .ci/run installs it (make system-deps)")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql, or make system-deps)")


def get(uri: str, endpoint: str, **params) -> dict:
    with urllib.request.urlopen(f"{uri}{endpoint}?{urllib.parse.urlencode(params)}", timeout=30) as r:
        return json.loads(r.read())


def post(uri: str, endpoint: str, body: dict) -> dict:
    req = urllib.request.Request(f"{uri}{endpoint}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def search_runs(uri: str, exp_id: str, filt: str = "") -> list[dict]:
    runs, token = [], None
    while True:
        body = {"experiment_ids": [exp_id], "filter": filt, "max_results": 500, **({"page_token": token} if token else {})}
        page = post(uri, "/api/2.0/mlflow/runs/search", body)
        runs += page.get("runs", [])
        token = page.get("next_page_token")
        if not token:
            return runs


def tags(run: dict) -> dict:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def metrics(run: dict) -> dict:
    return {m["key"]: m["value"] for m in run["data"].get("metrics", [])}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    _needs_postgres()
    work = tmp_path_factory.mktemp("integration")
    os.environ.update(LOOPBACK_ONLY)  # also for this process (none of it starts Ray); restored below
    try:
        with services.postgresql() as pg, services.mlflow_server(pg, work) as mlflow_uri, \
                services.ray_head(ROOT) as ray_address:
            yield {"work": work, "mlflow": mlflow_uri, "ray": ray_address, "postgres": pg}
    finally:
        for k in LOOPBACK_ONLY:
            os.environ.pop(k, None)


def test_four_job_sweep_on_ray_logs_to_mlflow_server_on_postgres(stack):
    uri, outputs = stack["mlflow"], stack["work"] / "outputs"
    out = run_cli("-m", "hydra/launcher=ray_cluster", f"hydra.launcher.ray.init.address={stack['ray']}",
                  "recipe=tiny_int8", "device=host,pixel7", "stages.quantize.calibration_samples=16,32",
                  "stages.train.threads=1", "tracking=server", f"tracking.uri={uri}", "tracking.experiment=integration",
                  "gate.artifact=export",  # the fp32 export always passes its gate: registry outcome is fixed
                  # the smoke recipe registers nothing by default, and its one-epoch model is near chance
                  "registry.enabled=true", "registry.min_score=0",
                  f"paths.outputs={outputs}", env={**LOOPBACK_ONLY, "OMP_NUM_THREADS": "1"}, timeout=1500)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-5000:]
    assert "Ray Launcher is launching 4 jobs" in text and "(_run_job pid=" in text  # ran in Ray workers

    exp = get(uri, "/api/2.0/mlflow/experiments/get-by-name", experiment_name="integration")["experiment"]
    runs = search_runs(uri, exp["experiment_id"])
    parents = [r for r in runs if tags(r).get("sweep.role") == "parent"]
    jobs = [r for r in runs if tags(r).get("sweep.role") == "job"]
    assert len(parents) == 1 and len(jobs) == 4
    parent = parents[0]
    pid = parent["info"]["run_id"]
    assert parent["info"]["status"] == "FINISHED" and metrics(parent)["jobs"] == 4
    job_ids = {j["info"]["run_id"] for j in jobs}
    for j in jobs:
        t = tags(j)
        assert j["info"]["status"] == "FINISHED"
        assert t["mlflow.parentRunId"] == pid and t["sweep.id"] == tags(parent)["sweep.id"]
        assert {"quantize.accuracy", "quantize.size_mb", "objective.accuracy"} <= set(metrics(j))
    stage_runs = [r for r in runs if tags(r).get("mlflow.parentRunId") in job_ids]
    assert len(stage_runs) == 4 * 7
    trains = [r for r in stage_runs if r["info"]["run_name"] == "train"]
    assert sorted(tags(r)["cache.hit"] for r in trains) == ["false", "true", "true", "true"]  # train ran once

    # artifacts are served by the server: listed and downloaded through it
    # (a quantize that computed its model: a reused one points at it with cache.logged_by instead of a copy)
    q = next(r for r in stage_runs if r["info"]["run_name"] == "quantize" and tags(r)["cache.hit"] == "false")
    for r in stage_runs:  # (a job that reused a stage while its first run was still logging it logs a copy)
        if "cache.logged_by" in tags(r):
            assert tags(r)["cache.logged_by"] in {s["info"]["run_id"] for s in stage_runs}
    listed = get(uri, "/api/2.0/mlflow/artifacts/list", run_id=q["info"]["run_id"], path="quantize")["files"]
    assert [f["path"] for f in listed] == ["quantize/model.int8.onnx"] and int(listed[0]["file_size"]) > 1000
    with urllib.request.urlopen(f"{uri}/get-artifact?" + urllib.parse.urlencode(
            {"path": "quantize/model.int8.onnx", "run_id": q["info"]["run_id"]}), timeout=30) as r:
        assert len(r.read()) == int(listed[0]["file_size"])
    assert list((stack["work"] / "artifacts").rglob("model.int8.onnx"))  # stored on the server side
    compare_files = get(uri, "/api/2.0/mlflow/artifacts/list", run_id=pid, path="compare")["files"]
    assert {f["path"] for f in compare_files} == {"compare/leaderboard.png", "compare/leaderboard.html",
                                                  "compare/leaderboard.json"}

    # registry in the PostgreSQL store: one model per recipe and device; both jobs of a device judge the same export
    # file, so it is registered once ("same as v1")
    for device in ("host", "pixel7"):
        name = f"tiny_int8-{device}"
        versions = get(uri, "/api/2.0/mlflow/model-versions/search", filter=f"name='{name}'")["model_versions"]
        assert sorted(v["version"] for v in versions) == ["1"]
        cand = get(uri, "/api/2.0/mlflow/registered-models/alias", name=name, alias="candidate")["model_version"]
        champ = get(uri, "/api/2.0/mlflow/registered-models/alias", name=name, alias="champion")["model_version"]
        assert cand["version"] == champ["version"] == "1"
        assert {t["key"]: t["value"] for t in cand["tags"]}["device"] == device
