"""Device budgets as Optuna constraints (pipeline.tracking.sweep_constraints): read from a job's summary, <= 0 when met."""
from __future__ import annotations

import json

import summaries
from pipeline.report.schema import Summary
from pipeline.tracking import sweep_constraints


def _summary(latency, model_mb, fps) -> dict:
    checks = [{"name": "latency_ms", "ok": latency <= 50, "message": "", "limit": 50.0, "value": latency},
              {"name": "model_mb", "ok": model_mb <= 20, "message": "", "limit": 20.0, "value": model_mb},
              {"name": "fps", "ok": fps >= 30, "message": "", "limit": 30.0, "value": fps}]
    return summaries.summary([summaries.row("export", "onnx", "fp32", 1000),
                              summaries.row("quantize", "onnx", "int8", 300, checks=checks)])


def test_violations_are_relative_and_signed():
    v = sweep_constraints.violations(Summary.from_dict(_summary(75.0, 10.0, 13.3)))
    lat, fps, mb, ram = v
    assert lat == 0.5 and mb == -0.5 and fps > 0 and ram == 0.0  # over latency, under size, too few fps, unchecked


def test_constraints_read_the_job_by_trial_number(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps(_summary(10.0, 5.0, 100.0)))
    (tmp_path / "sweep" / "3").mkdir(parents=True)
    (tmp_path / "sweep" / "3" / "job.json").write_text(json.dumps({"job": 3, "run_dir": str(run)}))
    c = sweep_constraints.BudgetConstraints(str(tmp_path / "sweep"))
    trial = type("Trial", (), {"number": 3})()
    assert all(x <= 0 for x in c(trial))
    trial.number = 4  # a job that left no summary: not held against the trial
    assert c(trial) == [0.0] * len(sweep_constraints.BUDGETS)
