"""The compare leaderboard as a person reads it, on a real MLflow store shaped like a sweep: two jobs that quantize
the same way tie (overlapping intervals) instead of one "faster" and one "slower"; the registry column lists the
aliases of versions registered from the stage runs; the table fits 120 columns; the plot numbers and lists every
point, merges the fp32 model every job reused and draws the Pareto front; the HTML sorts and links to the runs."""
from __future__ import annotations

import json
import re

import pytest
from mlflow.tracking import MlflowClient

import summaries
from pipeline.report import leaderboard
from pipeline.tracking import compare, tracker as tracking

MEASURED = "this host (test CPU), onnxruntime 1.31.1, 2 thread(s), batch 1, load average 1.90 before, 2.05 after"


def _row(name, fmt, prec, size, acc, p50, ci, cache_key, speedup=None, speedup_ci=None, ok=True, problems=()):
    return summaries.row(name, fmt, prec, size, acc, ok, problems, speedup=speedup, speedup_ci=speedup_ci,
                         size_ratio=None if prec == "fp32" else 0.3, measured_on=MEASURED, cache_key=cache_key,
                         latency_ms={"p50": p50, "p90": p50 * 1.2, "p50_ci": ci})


def _job(client, exp_id, tmp_path, job, overrides, int8, sweep="s1", register_as=None, tag_parent=True):
    """A pipeline run (parent) with a nested `quantize` run holding the model, its summary.json, and optionally a
    model version registered from the stage run (as pipeline.tracking.registry does)."""
    parent = client.create_run(exp_id, run_name=f"demo@host {overrides}",
                               tags={"recipe": "demo", "run_dir": "/x", "sweep.id": sweep, "sweep.role": "job",
                                     "sweep.job": str(job), "sweep.overrides": f"recipe=demo device=host {overrides}"})
    pid = parent.info.run_id
    stage = client.create_run(exp_id, run_name="quantize", tags={"mlflow.parentRunId": pid})
    model = tmp_path / f"{pid}" / "model.int8.onnx"
    model.parent.mkdir()
    model.write_bytes(b"\0" * 100)
    client.log_artifact(stage.info.run_id, str(model), artifact_path="quantize")
    client.set_terminated(stage.info.run_id)
    summary = summaries.summary(
        [_row("export", "onnx", "fp32", 2_000_000, 0.97, 1.0 + 0.05 * job, [0.9, 1.2], "fp32key"),
         _row("quantize", "onnx", "int8", 600_000, 0.96, *int8)],
        objective={"metrics": ["latency_ms"], "values": {"latency_ms": int8[0]}}, mlflow={"run_id": pid},
        registry={"model": "demo-host"})
    (tmp_path / pid / "summary.json").write_text(json.dumps(summary))
    client.log_artifact(pid, str(tmp_path / pid / "summary.json"))
    client.set_terminated(pid)
    if register_as:
        name = "demo-host"
        try:
            client.create_registered_model(name)
        except Exception:
            pass
        source = client.get_run(stage.info.run_id).info.artifact_uri + "/quantize"
        mv = client.create_model_version(name, source, run_id=stage.info.run_id,
                                         tags={"pipeline_run_id": pid} if tag_parent else {})
        for alias in register_as:
            client.set_registered_model_alias(name, alias, mv.version)
    return pid


@pytest.fixture
def sweep_store(tmp_path):
    return make_sweep_store(tmp_path)


def make_sweep_store(tmp_path):
    """Four jobs of one sweep in a real SQLite store (also used by the screenshot test)."""
    outputs = tmp_path / "outputs"
    tr = tracking.Tracker(tracking.local_uri(outputs), "demo", outputs / "mlartifacts")
    client = MlflowClient(tr.uri)
    # jobs 0 and 1 quantize the same way: point values differ (0.31 vs 0.36 ms), the intervals overlap
    same = "quantize.calibration_samples=64"
    ids = [
        _job(client, tr.experiment_id, tmp_path, 0, f"stages.{same} seed=0",
             (0.31, [0.27, 0.38], "int8key", 3.2, [2.5, 3.9]), register_as=["champion"]),
        _job(client, tr.experiment_id, tmp_path, 1, f"stages.{same} seed=1",
             (0.36, [0.30, 0.41], "int8key-b", 2.9, [2.2, 3.6]), register_as=["candidate"], tag_parent=False),
        _job(client, tr.experiment_id, tmp_path, 2, "stages.quantize.calibration_samples=512 seed=0",
             (0.80, [0.75, 0.85], "int8key-c", 1.3, [1.1, 1.5])),
        _job(client, tr.experiment_id, tmp_path, 3, "stages.quantize.calibration_samples=256 seed=0",
             (0.98, [0.70, 1.30], "int8key-d", 1.0, [0.8, 1.3], False, ["slower than its fp32 baseline"])),
    ]
    return outputs, ids


def test_leaderboard_ties_registry_width_and_merged_plot(sweep_store, capsys):
    outputs, ids = sweep_store
    out = outputs / "cmp"
    assert compare.main(["experiment=demo", "sweep=s1", f"paths.outputs={outputs}", f"out={out}"]) == 0
    text = capsys.readouterr().out.split("\nwrote")[0]
    assert max(len(line) for line in text.splitlines()) <= 120, text
    data = json.loads((out / "leaderboard.json").read_text())
    rows = {r["run_id"]: r for r in data["rows"]}
    a, b = rows[ids[0]], rows[ids[1]]
    assert a["rank"] == b["rank"] == "=1"  # tied on latency: not one faster and one slower
    assert a["tie"] == b["tie"] == "T1" and rows[ids[2]]["tie"] == rows[ids[3]]["tie"] == "T2"
    assert ("T1: no measurable difference in p50 between #1 quantize (calibration_samples=64 seed=0), #1 quantize "
            "(calibration_samples=64 seed=1)") in text.replace("\n  ", " ")
    assert rows[ids[2]]["rank"] == rows[ids[3]]["rank"] == "=3"
    # versions are registered from the stage run: the pipeline run is found through the tag or the stage's parent
    assert a["aliases"] == ["champion"] and b["aliases"] == ["candidate"]
    assert "champion" in text and "candidate" in text
    assert "n.s." in text  # job 3's speed-up interval contains 1: not significant
    assert "✗ FAIL" in text and "✓ pass" in text  # words beside the symbols
    plot = data["plot"]
    assert plot["plotted"] == 8 and plot["points"] == 5  # the fp32 model all four jobs reused is one point
    assert any(label.startswith("4 runs (#1,#3) export onnx fp32") for label in plot["labels"]), plot["labels"]
    assert plot["front"] and len(plot["labels"]) == plot["points"]  # every point listed


def test_html_sorts_links_to_runs_and_is_self_contained(sweep_store, capsys):
    outputs, ids = sweep_store
    out = outputs / "cmp"
    assert compare.main(["experiment=demo", "sweep=s1", "artifacts=all", f"paths.outputs={outputs}", f"out={out}",
                         "ui=http://127.0.0.1:5999"]) == 0
    page = (out / "leaderboard.html").read_text()
    assert "<table class=\"sortable\">" in page and "<script>" in page and "addEventListener('click'" in page
    for rid in ids:
        assert f"href='http://127.0.0.1:5999/#/experiments/" in page and f"/runs/{rid}'" in page
    assert "data-v='0.31'" in page  # numeric sort keys
    assert not re.search(r"""src=["']?(https?:|//|file:)""", page)
    assert "✓ pass" in page and "✗ FAIL" in page and "✅" not in page  # glyphs every sans font has, and words


def test_table_wraps_long_cells_to_the_width():
    rows = [{"rank": "1", "overrides": "device=pixel7 quantize.calibration_samples=64 quantize.method=entropy "
                                       "model.width_mult=0.5", "run": "r", "run_id": "abc", "device": "pixel7",
             "artifact": "quantize", "format": "tflite", "precision": "int8", "size_mb": 2.35, "accuracy": 0.9889,
             "latency_p50_ms": 0.31, "latency_p50_ci": [0.29, 0.33], "speedup": 1.51, "speedup_ci": [1.4, 1.6],
             "tie": None, "ok": False, "verdict": "fail", "problems": ["loses 5.00 top-1 points (gate.max_accuracy_drop=1)",
                                                     "device budget: latency_ms 80 vs limit 50"],
             "not_runnable": None, "aliases": ["candidate", "champion"], "objective_metric": "accuracy",
             "measured_on": MEASURED, "judged": True}]
    text = leaderboard.table(rows)
    assert max(len(line) for line in text.splitlines()) <= 120, text
    assert "0.31 (0.29-0.33)" in text and "1.51x" in text and "n.s." not in text
