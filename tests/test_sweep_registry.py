"""Registry aliases against a real MLflow store (SQLite): `candidate` follows every gate-passing final artifact,
`champion` moves only when the recipe's first objective metric improves."""
from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from pipeline.report import objective
from pipeline.report.schema import ArtifactRow, Gate, Summary, Verdict

from pipeline.tracking import registry, tracker as tracking
from pipeline.core.artifacts import Artifact
from pipeline.core.runner import TaskRecord


def _cfg(device="pixel7", metrics=("accuracy",), artifact=None, name=None):
    return OmegaConf.create({
        "device": {"name": device, "display_name": device},
        "objective": {"metrics": list(metrics)}, "gate": {"artifact": artifact},
        "registry": {"enabled": True, "name": name},
    })


def _run(tmp_path: Path, outputs: Path, cfg, accuracy, latency=1.0, ok=True, recipe="demo", gate=None):
    """One pipeline-shaped run in the store: a parent run, a nested `quantize` run holding the model file, and the
    summary the registry reads."""
    tracker = tracking.Tracker(tracking.local_uri(outputs), recipe, outputs / "mlartifacts")
    tracker.start(f"{recipe}@{cfg.device.name}", {}, {"recipe": recipe, "device": cfg.device.name})
    out = tmp_path / f"out-{tracker.run_id}"
    out.mkdir()
    (out / "model.int8.onnx").write_bytes(b"\0" * 1000)
    rec = TaskRecord("quantize", "quantize", "quantize_onnx", ["export"], status="ran",
                     artifact=Artifact("quantize", "onnx", "int8", out / "model.int8.onnx"))
    tracker.log_stage(rec, out)
    problems = [] if ok else ["loses 5.00 top-1 points (gate.max_accuracy_drop=1)"]
    if gate is not None:  # the device budget verdict
        problems += gate
    verdict = Verdict(status="fail" if problems else "pass", problems=problems)
    row = ArtifactRow(name="quantize", stage="quantize", type="quantize_onnx", format="onnx", precision="int8",
                      path="model.int8.onnx", size_bytes=1000, accuracy=accuracy,
                      latency_ms={"p50": latency, "p90": latency}, verdict=verdict,
                      cache_key=f"k-{tracker.run_id}")  # a new model each time (the same one is registered once)
    summary = Summary(recipe=recipe, task={"name": "classification", "metric": "top-1"},
                      device={"name": cfg.device.name}, status="success", run_dir=str(out), artifacts=[row],
                      gate=Gate(artifact="quantize", status=verdict.status, failed=problems),
                      mlflow={"run_id": tracker.run_id})
    summary.objective = objective.summarize(summary, cfg)
    result = registry.register(tracker, summary, cfg, outputs)
    tracker.end("FINISHED")
    return result


def _alias(client, name, alias):
    return str(client.get_model_version_by_alias(name, alias).version)


def test_candidate_follows_passing_runs_champion_only_improvements(tmp_path):
    outputs = tmp_path / "outputs"
    client = MlflowClient(tracking.local_uri(outputs))
    cfg = _cfg()
    r1 = _run(tmp_path, outputs, cfg, accuracy=0.90)
    assert r1["registered"] and r1["model"] == "demo-pixel7" and r1["aliases"] == ["candidate", "champion"]
    assert _alias(client, "demo-pixel7", "champion") == "1"

    r2 = _run(tmp_path, outputs, cfg, accuracy=0.85)  # worse: a candidate, not the champion
    assert r2["version"] == "2" and r2["aliases"] == ["candidate"] and not r2["champion_moved"]
    assert _alias(client, "demo-pixel7", "candidate") == "2" and _alias(client, "demo-pixel7", "champion") == "1"

    r3 = _run(tmp_path, outputs, cfg, accuracy=0.90)  # a tie keeps the incumbent
    assert not r3["champion_moved"] and _alias(client, "demo-pixel7", "champion") == "1"

    r4 = _run(tmp_path, outputs, cfg, accuracy=0.95)  # better: champion moves
    assert r4["champion_moved"] and _alias(client, "demo-pixel7", "champion") == "4"
    assert _alias(client, "demo-pixel7", "candidate") == "4"

    r5 = _run(tmp_path, outputs, cfg, accuracy=0.99, ok=False)  # gates fail: not registered at all
    assert not r5["registered"] and "top-1" in r5["reason"]
    assert _alias(client, "demo-pixel7", "candidate") == "4" and _alias(client, "demo-pixel7", "champion") == "4"
    missed = ["latency_ms 80 ms vs limit 50: over by 30 ms (60%)"]
    r6 = _run(tmp_path, outputs, cfg, accuracy=0.99, gate=missed)  # misses a device budget: not registered either
    assert not r6["registered"] and "verdict fail: latency_ms 80 ms vs limit 50" in r6["reason"]
    assert len(client.search_model_versions("name='demo-pixel7'")) == 4

    mv = client.get_model_version("demo-pixel7", "4")
    assert mv.tags["objective.accuracy"] == "0.95" and mv.tags["format"] == "onnx"
    # the version's run is the stage run holding the file; the pipeline run it was judged on is tagged
    assert client.get_run(mv.run_id).data.tags["mlflow.parentRunId"] == mv.tags["pipeline_run_id"]
    assert mv.source.endswith("/quantize")
    local = Path(client.download_artifacts(mv.run_id, "quantize"))
    assert (local / "model.int8.onnx").stat().st_size == 1000


def test_one_model_per_recipe_and_device_and_minimized_objectives(tmp_path):
    outputs = tmp_path / "outputs"
    client = MlflowClient(tracking.local_uri(outputs))
    fast = _cfg(device="host", metrics=("latency_ms", "accuracy"))
    assert _run(tmp_path, outputs, fast, accuracy=0.9, latency=2.0)["champion_moved"]
    assert not _run(tmp_path, outputs, fast, accuracy=0.99, latency=3.0)["champion_moved"]  # slower loses
    assert _run(tmp_path, outputs, fast, accuracy=0.5, latency=1.5)["champion_moved"]  # latency decides alone
    assert _alias(client, "demo-host", "champion") == "3"
    _run(tmp_path, outputs, _cfg(device="iphone15"), accuracy=0.9)
    names = {m.name for m in client.search_registered_models()}
    assert names == {"demo-host", "demo-iphone15"}


def test_missing_objective_value_never_becomes_champion(tmp_path):
    outputs = tmp_path / "outputs"
    client = MlflowClient(tracking.local_uri(outputs))
    cfg = _cfg(device="iphone15")
    _run(tmp_path, outputs, cfg, accuracy=0.8)
    r = _run(tmp_path, outputs, cfg, accuracy=None)  # e.g. Core ML on Linux: no accuracy measured here
    assert r["registered"] and not r["champion_moved"]
    assert _alias(client, "demo-iphone15", "champion") == "1"


@pytest.mark.bad_input
def test_unknown_objective_metric_is_a_config_error(make_cfg):
    from pipeline.core.errors import ConfigError
    from pipeline.core.plan import build_plan

    cfg = make_cfg("recipe=tiny_int8", "objective.metrics=[acuracy]")
    plan = build_plan(cfg)
    with pytest.raises(ConfigError, match=r"objective.metrics\[0\]: unknown metric 'acuracy'. Did you mean 'accuracy'"):
        objective.check(cfg, [t.stage for t in plan.producers()])
    cfg = make_cfg("recipe=tiny_int8", "gate.artifact=evaluate")  # one key names the judged artifact for all
    with pytest.raises(ConfigError, match="gate.artifact: 'evaluate' is not a model of this recipe"):
        build_plan(cfg)
