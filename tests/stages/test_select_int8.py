"""The measured choice on this host: int8 candidates in both formats, timed side by side with the fp32 baselines, the
fastest within the accuracy budget kept, the losers listed with why they lost."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import compose_cfg
from pipeline import app, judge, report


@pytest.fixture(scope="module")
def host_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("select") / "outputs"
    cfg = compose_cfg(["recipe=tiny_int8", "device=host", "tracking=none", "stages.export.type=export",
                       "stages.quantize.type=quantize", "stages.quantize.candidates=[ort_defaults,litert_int8]",
                       "stages.quantize.fp32_tflite_baseline=true", "stages.quantize.iterations=10",
                       "stages.quantize.warmup=2", "stages.quantize.max_accuracy_drop=100"], out)
    return app.run(cfg)


def test_choice_is_measured_and_losers_listed(host_run):
    s = host_run
    q = {a["name"]: a for a in s["artifacts"]}["quantize"]
    sel = q["selection"]
    assert q["precision"] == "int8" and q["format"] in ("onnx", "tflite")
    names = {c["name"]: c for c in sel["candidates"]}
    assert set(names) == {"ort_defaults", "litert_int8", "export (fp32 onnx)", "fp32 tflite"}
    int8 = [c for c in names.values() if c["kind"] == "int8"]
    chosen = [c for c in int8 if c["chosen"]]
    assert len(chosen) == 1 and chosen[0]["name"] == sel["chosen"]
    assert chosen[0]["latency_p50_ms"] == min(c["latency_p50_ms"] for c in int8 if c["passed"])
    loser = next(c for c in int8 if not c["chosen"])
    assert loser["lost_because"] == "slower"
    fastest_fp32 = min((c for c in names.values() if c["kind"] == "fp32"), key=lambda c: c["latency_p50_ms"])
    assert sel["fastest_fp32"] == fastest_fp32["name"]
    assert abs(sel["speedup_vs_fastest_fp32"] - fastest_fp32["latency_p50_ms"] / chosen[0]["latency_p50_ms"]) < 1e-9
    # the chosen file is the artifact, the losers are not kept
    run_dir = Path(s["run_dir"])
    assert (run_dir / q["path"]).is_file() and not list(run_dir.rglob("candidates"))
    table = report.table(s, color=False)
    assert f"measured choice {sel['chosen']}" in table and f"{loser['name']} (" in table


def test_slower_choice_is_flagged_red(host_run):
    s = host_run
    q = {a["name"]: a for a in s["artifacts"]}["quantize"]
    q["selection"] = {**q["selection"], "slower_than_fp32": True, "speedup_vs_fastest_fp32": 0.8}
    judge.compare(s["artifacts"], type("G", (), {"max_accuracy_drop": 100.0})())
    assert not q["ok"] and any("slower than the fastest fp32 model" in p for p in q["problems"])
    assert "\033[31m" in report.table(s, color=True)


@pytest.mark.slow
def test_a_tighter_accuracy_budget_re_runs_the_choice_and_says_why(tmp_path):
    """The choice depends on gate.max_accuracy_drop: a run with another budget must not reuse it (its key holds the
    setting), and the reason names the setting that changed."""
    base = ["recipe=tiny_int8", "device=host", "tracking=none", "stages.export.type=export",
            "stages.quantize.type=quantize", "stages.quantize.candidates=[ort_defaults,ort_per_channel_u8]",
            "stages.quantize.fp32_tflite_baseline=false", "stages.quantize.iterations=5", "stages.quantize.warmup=1",
            "~stages.benchmark"]
    out = tmp_path / "outputs"
    first = app.run(compose_cfg([*base, "gate.max_accuracy_drop=100"], out))
    second = app.run(compose_cfg([*base, "gate.max_accuracy_drop=99.5"], out))
    stages = {s["name"]: s for s in second["stages"]}
    assert {s["name"]: s["status"] for s in first["stages"]}["quantize"] == "ran"
    assert stages["train"]["status"] == "reused" and stages["export"]["status"] == "reused"
    assert stages["quantize"]["type"] == "select_int8" and stages["quantize"]["status"] == "ran"
    assert "setting gate.max_accuracy_drop 100.0 -> 99.5" in stages["quantize"]["reason"]
