"""The release gate end to end, against a real MLflow store and registry: a champion is registered; a deliberately
worse model (its layers pruned without fine-tuning, one calibration image) fails the gate with a report naming the
regression, is not registered, and `edge-pipeline gate` exits 1 on it; an identical re-run passes as "no measurable
change". Tiny model (32 px, width 0.35, 6 epochs: ~69% top-1 on digits) so that a regression is beyond the noise."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import compose_cfg
from pipeline import app
from pipeline.core.errors import GateFailed
from pipeline.report.schema import Summary

BASE = ["recipe=tiny_int8", "device=host", "model.input_size=32", "stages.train.epochs=6", "stages.train.threads=1",
        "stages.train.lr=0.01", "~stages.benchmark", "registry.enabled=true"]
WORSE = ["stages.prune.type=prune", "stages.prune.inputs=[train]", "stages.prune.epochs=0", "stages.prune.amount=0.5",
         "stages.export.inputs=[prune]", "stages.quantize.calibration_samples=1"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("gate") / "outputs"
    champion = app.run(compose_cfg(BASE, out))
    with pytest.raises(GateFailed) as failed:
        app.run(compose_cfg([*BASE, *WORSE, "gate.against=champion"], out))
    worse = Summary.load(next(p for p in sorted((out / "runs" / "tiny_int8").glob("*/summary.json"))
                              if p.parent.name != Path(champion.run_dir).name))
    again = app.run(compose_cfg([*BASE, "gate.against=champion"], out))
    return champion, worse, again, str(failed.value)


@pytest.mark.slow
def test_a_worse_model_fails_the_gate_with_a_report_naming_the_regression(runs):
    champion, worse, _, error = runs
    assert champion.registry["aliases"] == ["candidate", "champion"] and champion.judged.accuracy > 0.5
    r = worse.release
    assert r.status == "fail" and r.against == "champion v1 of tiny_int8-host"
    assert r.regressions and r.regressions[0].startswith("top-1") and "regression: top-1" in r.headline
    report = Path(r.report).read_text()
    assert report.startswith("## Release gate: ❌ fail: regression: top-1")
    assert "| accuracy |" in report and "**regression**" in report and "95% interval" in report
    assert "release gate against champion v1" in error and r.report in error
    assert worse.registry["registered"] is False and "release gate" in worse.registry["reason"]


@pytest.mark.slow
def test_an_identical_rerun_passes_as_no_measurable_change(runs):
    _, _, again, _ = runs
    r = again.release
    assert r.status == "pass" and r.headline.startswith("no measurable change")
    assert {c.name for c in r.checks} >= {"accuracy", "latency", "size"} and all(c.ok for c in r.checks)
    assert again.registry["registered"] and "champion" not in again.registry["aliases"]  # a tie keeps the incumbent


@pytest.mark.slow
def test_the_command_exits_1_on_the_regression_and_0_without(runs, capsys):
    from pipeline.cli import gate

    _, worse, again, _ = runs
    assert gate.main(["--against", "champion", f"run={worse.run_dir}", "iterations=20"]) == 1
    out = capsys.readouterr().out
    assert "## Release gate: ❌ fail" in out and "report: " in out
    assert gate.main([f"run={again.run_dir}", "iterations=20"]) == 0
    assert "no measurable change" in capsys.readouterr().out
    assert gate.main(["run=/nonexistent"]) == 2
