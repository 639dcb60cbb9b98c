"""The measured choice on this host: candidates of every back end (ONNX Runtime, LiteRT, OpenVINO, ExecuTorch) timed
side by side, the peer defaults flagged, the fastest int8 within the accuracy budget kept, the losers listed with why
they lost, and the table (select_int8.md) next to the artifact."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from conftest import compose_cfg
from pipeline import app
from pipeline.report import judge
from pipeline.report.table import summary_table

# one or more of every back end, its peer default among them (each build costs seconds to a minute on 2 busy cores)
CANDIDATES = ["ort_defaults", "litert_int8", "openvino_default", "openvino_int8", "openvino_int8_throughput",
              "executorch_fp32", "executorch_int8"]
PEERS = {"ort_defaults", "litert_int8", "openvino_default", "executorch_fp32"}


@pytest.fixture(scope="module")
def host_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("select") / "outputs"
    cfg = compose_cfg(["recipe=tiny_int8", "device=host", "tracking=none", "stages.export.type=export",
                       "stages.quantize.type=quantize", f"stages.quantize.candidates=[{','.join(CANDIDATES)}]",
                       "stages.quantize.iterations=10", "stages.quantize.warmup=2",
                       "stages.quantize.max_accuracy_drop=100", "~stages.benchmark"], out)
    return app.run(cfg), cfg


@pytest.mark.slow
def test_every_back_end_is_a_candidate_and_the_fastest_within_budget_is_chosen(host_run):
    s = host_run[0].to_dict()
    assert s["status"] == "success", s["error"]
    q = {a["name"]: a for a in s["artifacts"]}["quantize"]
    sel = q["selection"]
    assert q["precision"] == "int8" and q["format"] == sel["format"]
    rows = {c["name"]: c for c in sel["candidates"]}
    listed = set(rows) | {n["name"] for n in sel["not_runnable"]}
    assert listed == {"ort_fp32", *CANDIDATES}, listed
    assert {r["backend"] for r in rows.values()} == {"onnxruntime", "litert", "openvino", "executorch"}
    assert {n for n, r in rows.items() if r["peer_default"]} == PEERS & set(rows)
    from pipeline.convert.openvino import default_inference_precision
    assert rows["openvino_default"]["precision"] == {"f32": "fp32"}.get(default_inference_precision(),
                                                                      default_inference_precision())
    assert "THROUGHPUT" in rows["openvino_int8_throughput"]["settings"] and "THROUGHPUT" in \
        rows["openvino_int8_throughput"]["runtime"]
    int8 = [r for r in rows.values() if r["kind"] == "int8"]
    chosen = [r for r in int8 if r["chosen"]]
    assert len(chosen) == 1 and chosen[0]["name"] == sel["chosen"]
    assert chosen[0]["latency_p50_ms"] == min(r["latency_p50_ms"] for r in int8 if r["passed"])
    assert all(r["lost_because"] for r in int8 if not r["chosen"])
    fastest_fp32 = min((r for r in rows.values() if r["precision"] == "fp32"), key=lambda r: r["latency_p50_ms"])
    fastest_peer = min((r for r in rows.values() if r["peer_default"]), key=lambda r: r["latency_p50_ms"])
    assert sel["fastest_fp32"] == fastest_fp32["name"] and sel["fastest_peer_default"] == fastest_peer["name"]
    for r in rows.values():
        lo, hi = r["latency_p50_ci"]
        assert lo <= r["latency_p50_ms"] <= hi and r["size_bytes"] > 0 and 0 <= r["accuracy"] <= 1
        lo, hi = r["speedup_vs_fastest_peer_default_ci"]
        assert lo <= r["speedup_vs_fastest_peer_default"] <= hi
    # the chosen file is the artifact, the losers are not kept; the table lists every candidate
    run_dir = Path(s["run_dir"])
    assert (run_dir / q["path"]).is_file() and not list(run_dir.rglob("candidates"))
    md = (run_dir / "artifacts" / "quantize" / "select_int8.md").read_text()
    assert all(f"| {n} |" in md for n in listed) and "**chosen**" in md and "load average" in md
    table = summary_table(host_run[0], color=False)
    assert f"measured choice {sel['chosen']}" in table


@pytest.mark.slow
def test_slower_choice_is_flagged_red(host_run):
    from dataclasses import replace

    summary, cfg = host_run
    q = summary.row("quantize")
    slower = replace(q, selection={**q.selection, "slower_than_fp32": True, "speedup_vs_fastest_fp32": 0.8})
    rows, _ = judge.judge([slower if r is q else r for r in summary.artifacts], {"max_accuracy_drop": 100.0},
                          cfg.device)
    verdict = next(r for r in rows if r.name == "quantize").verdict
    assert verdict.status == "fail" and any("slower than the fastest fp32 model" in p for p in verdict.problems)
    assert "\033[31m" in summary_table(replace(summary, artifacts=rows), color=True)


@pytest.mark.slow
def test_a_tighter_accuracy_budget_re_runs_the_choice_and_says_why(tmp_path):
    """The choice depends on gate.max_accuracy_drop: a run with another budget must not reuse it (its key holds the
    setting), and the reason names the setting that changed."""
    base = ["recipe=tiny_int8", "device=host", "tracking=none", "stages.export.type=export",
            "stages.quantize.type=quantize", "stages.quantize.candidates=[ort_defaults,ort_per_channel_u8]",
            "stages.quantize.iterations=5", "stages.quantize.warmup=1",
            "~stages.benchmark"]
    out = tmp_path / "outputs"
    first = app.run(compose_cfg([*base, "gate.max_accuracy_drop=100"], out)).to_dict()
    second = app.run(compose_cfg([*base, "gate.max_accuracy_drop=99.5"], out)).to_dict()
    stages = {s["name"]: s for s in second["stages"]}
    assert {s["name"]: s["status"] for s in first["stages"]}["quantize"] == "ran"
    assert stages["train"]["status"] == "reused" and stages["export"]["status"] == "reused"
    assert stages["quantize"]["type"] == "select_int8" and stages["quantize"]["status"] == "ran"
    assert "setting gate.max_accuracy_drop 100.0 -> 99.5" in stages["quantize"]["reason"]
