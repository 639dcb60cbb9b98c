"""`edge-pipeline benchmark`: a zoo model with random weights in several formats, timed side by side: every candidate
ran with an interval or says why not (Core ML: not on Linux, with its size), top-1 is n/a with the reason (never 0%),
the table fits 120 columns on the console and is written as CSV and JSON and onto the run card."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from conftest import compose_cfg
from pipeline import app
from pipeline.report.table import display_width

CANDIDATES = ["ort_defaults", "ort_nncf_int8", "openvino_fp32", "openvino_int8", "coreml_fp16"]


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    import contextlib
    import io

    out = tmp_path_factory.mktemp("bench") / "outputs"
    cfg = compose_cfg(["recipe=benchmark", "model.input_size=16", "model.width_mult=0.35",
                       f"stages.formats.candidates=[{','.join(CANDIDATES)}]", "stages.formats.iterations=10",
                       "stages.formats.warmup=2", "stages.formats.calibration_samples=8"], out)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        summary = app.run(cfg)
    return summary, printed.getvalue()


@pytest.mark.slow
def test_every_candidate_is_timed_with_an_interval_or_says_why_not(bench):
    summary, _ = bench
    assert summary.status == "success" and not summary.artifacts  # a measurement: nothing to deploy
    (doc,) = summary.formats
    rows = {r["name"]: r for r in doc["rows"]}
    assert list(rows) == ["ort_fp32", *CANDIDATES]  # the reference first, then the order asked for
    ran = [r for r in rows.values() if r["status"] == "ran"]
    assert {r["backend"] for r in ran} >= {"onnxruntime", "openvino"}
    for r in ran:
        lo, hi = r["latency_p50_ci"]
        assert lo <= r["latency_p50_ms"] <= hi and r["fps"] == pytest.approx(1000 / r["latency_p50_ms"])
        assert r["accuracy"] is None and r["size_bytes"] > 0
        assert r["speedup_vs_fastest_fp32_ci"][0] <= r["speedup_vs_fastest_fp32"] <= r["speedup_vs_fastest_fp32_ci"][1]
    assert rows["coreml_fp16"]["status"] == "not_runnable" and "macOS" in rows["coreml_fp16"]["reason"]
    assert rows["coreml_fp16"]["size_bytes"] > 0 and rows["coreml_fp16"].get("latency_p50_ms") is None
    assert all(r["reason"] for r in rows.values() if r["status"] != "ran")
    assert "untrained head" in doc["metric_na"] and doc["model"]["untrained"]
    assert doc["reference"] in rows and rows[doc["reference"]]["precision"] == "fp32"


@pytest.mark.slow
def test_the_table_is_printed_written_and_on_the_card(bench):
    summary, printed = bench
    lines = printed.splitlines()
    start = next(i for i, l in enumerate(lines) if "in every format this host runs" in l)
    table = lines[start: next(i for i, l in enumerate(lines) if l.startswith("summary: "))]
    assert max(display_width(l) for l in table) <= 120
    assert any(l.startswith("ort_defaults†") and "✅" in l for l in table)
    assert any(l.startswith("coreml_fp16†") and "❎" in l for l in table)
    assert any("top-1 n/a: untrained head" in l for l in table)
    where = Path(summary.run_dir) / "reports" / "formats"
    with open(where / "benchmark_formats.csv") as f:
        got = {r["name"]: r for r in csv.DictReader(f)}
    assert set(got) == {"ort_fp32", *CANDIDATES} and float(got["ort_fp32"]["latency_p50_ms"]) > 0
    assert json.loads((where / "benchmark_formats.json").read_text())["rows"][0]["name"] == "ort_fp32"
    card = (Path(summary.run_dir) / "card" / "summary_card.md").read_text()
    assert "in every format this host runs" in card and "| coreml_fp16† | Core ML fp16 | – not run" in card
    assert "![accuracy vs latency and size](tradeoff.png)" in card
    assert (Path(summary.run_dir) / "card" / "tradeoff.png").stat().st_size > 10_000
