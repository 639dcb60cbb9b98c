"""`python -m pipeline.tracking.compare` on a real MLflow store holding pipeline-shaped runs (summary.json artifacts): the
leaderboard is printed ranked by the objective, the PNG and a self-contained HTML report are written."""
from __future__ import annotations

import json
import re

import pytest
from mlflow.tracking import MlflowClient

import summaries
from pipeline.report import leaderboard
from pipeline.tracking import compare, tracker as tracking


def _row(name, fmt, prec, size, acc, p50, ok=True, problems=()):
    return summaries.row(name, fmt, prec, size, acc, ok, problems,
                         latency_ms=None if p50 is None else {"p50": p50, "p90": p50 * 1.2},
                         measured_on="this host (test CPU), onnxruntime, 2 thread(s), batch 1")


def _log_run(client, exp_id, tmp_path, device, calib, acc, p50, sweep="s1"):
    run = client.create_run(exp_id, run_name=f"demo@{device}",
                            tags={"recipe": "demo", "device": device, "run_dir": "/x", "sweep.id": sweep,
                                  "sweep.role": "job", "sweep.overrides":
                                      f"recipe=demo device={device} stages.quantize.calibration_samples={calib}"})
    summary = summaries.summary([_row("export", "onnx", "fp32", 2_000_000, 0.97, 1.0),
                                 _row("quantize", "onnx", "int8", 600_000, acc, p50)],
                                device={"name": device},
                                objective={"metrics": ["accuracy"], "values": {"accuracy": acc}})
    p = tmp_path / run.info.run_id / "summary.json"
    p.parent.mkdir()
    p.write_text(json.dumps(summary))
    client.log_artifact(run.info.run_id, str(p))
    client.set_terminated(run.info.run_id)
    return run.info.run_id


@pytest.fixture
def store(tmp_path):
    outputs = tmp_path / "outputs"
    tr = tracking.Tracker(tracking.local_uri(outputs), "demo", outputs / "mlartifacts")
    client = MlflowClient(tr.uri)
    ids = {}
    for device, calib, acc, p50 in [("host", 64, 0.95, 0.6), ("host", 256, 0.96, 0.7),
                                    ("pixel7", 64, 0.90, 0.5), ("pixel7", 256, 0.93, 0.65)]:
        ids[(device, calib)] = _log_run(client, tr.experiment_id, tmp_path, device, calib, acc, p50)
    _log_run(client, tr.experiment_id, tmp_path, "host", 512, 0.99, 0.4, sweep="other")
    return outputs, ids


@pytest.mark.slow
def test_compare_prints_ranked_leaderboard_and_writes_png_and_html(store, capsys):
    outputs, ids = store
    out = outputs / "cmp"
    assert compare.main(["experiment=demo", "sweep=s1", f"paths.outputs={outputs}", f"out={out}"]) == 0
    text = capsys.readouterr().out
    lines = [l for l in text.splitlines() if re.match(r"^=?\d+\s", l)]
    assert len(lines) == 4  # the other sweep's run is not part of this comparison
    # ranked by accuracy of each run's final artifact; only the overrides that vary are shown (wrapped to fit)
    rows = json.loads((out / "leaderboard.json").read_text())["rows"]
    assert rows[0]["overrides"] == "device=host calibration_samples=256" and "96.00" in lines[0]
    assert rows[3]["overrides"] == "device=pixel7 calibration_samples=64"
    assert "recipe=demo" not in text and max(len(l) for l in text.split("\nwrote")[0].splitlines()) <= 120
    assert "top-1 %" in text and "p50 ms" in text and "latency: measured on this host" in text
    png = (out / "leaderboard.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    page = (out / "leaderboard.html").read_text()
    assert "data:image/png;base64," in page and "<table" in page
    assert not re.search(r"""src=["']?(https?:|//|file:)""", page)  # self-contained (links to MLflow runs only)
    data = json.loads((out / "leaderboard.json").read_text())
    assert data["plot"]["plotted"] == 8 and data["plot"]["front"]  # 4 runs x 2 models, Pareto front found


def test_compare_all_artifacts_and_whole_experiment(store, capsys):
    outputs, _ = store
    assert compare.main(["experiment=demo", "artifacts=all", f"paths.outputs={outputs}",
                         f"out={outputs / 'all'}"]) == 0
    lines = [l for l in capsys.readouterr().out.splitlines() if re.match(r"^=?\d+\s", l)]
    assert len(lines) == 10 and "99.00" in lines[0]  # 5 runs x 2 models; the other sweep's best run first


def test_pareto_front():
    pts = [(1.0, 90.0), (2.0, 95.0), (1.5, 89.0), (0.5, 80.0), (2.0, 94.0)]
    assert leaderboard.pareto_front(pts) == [3, 0, 1]


@pytest.mark.bad_input
def test_compare_bad_arguments(tmp_path, store, capsys):
    outputs, _ = store
    assert compare.main(["experimnt=demo"]) == 2
    assert "unknown key 'experimnt'. Did you mean 'experiment'?" in capsys.readouterr().err
    assert compare.main(["experiment=nope", f"paths.outputs={outputs}"]) == 2
    err = capsys.readouterr().err
    assert "experiment='nope' not found" in err and "demo" in err.split("experiments:")[1]
    assert compare.main(["experiment=demo", f"paths.outputs={tmp_path / 'empty'}"]) == 2
    assert "no MLflow store" in capsys.readouterr().err
