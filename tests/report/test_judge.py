"""The judge's rules, table-driven on hand-made rows: no runtime, no run, milliseconds each."""
from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest

from pipeline.report import judge
from pipeline.report.schema import ArtifactRow, Summary

DEVICE = SimpleNamespace(name="host", display_name="this host", runtime="onnxruntime", budgets={}, ram_gb=None,
                         get=lambda k, d=None: {"measured_here": True}.get(k, d))
GATE = {"max_accuracy_drop": 1.0, "enforce": False, "artifact": None, "judge": "point"}


def row(name, precision="fp32", fmt="onnx", accuracy=0.9, p50=None, ci=None, **kw) -> ArtifactRow:
    lat = None if p50 is None else {"p50": p50, "p90": p50 * 1.1, **({"p50_ci": ci} if ci else {})}
    return ArtifactRow(name=name, stage=name, type="t", format=fmt, precision=precision, path=f"{name}.bin",
                       size_bytes=kw.pop("size_bytes", 4_000_000), accuracy=accuracy, latency_ms=lat, **kw)


def verdicts(rows, gate=None):
    out, g = judge.judge(rows, {**GATE, **(gate or {})}, DEVICE)
    return {r.name: r.verdict for r in out}, g


@pytest.mark.parametrize("int8_acc, status", [(0.895, "pass"), (0.889, "fail"), (0.80, "fail")])
def test_accuracy_budget(int8_acc, status):
    v, _ = verdicts([row("export"), row("quantize", "int8", accuracy=int8_acc, size_bytes=1_000_000)])
    assert v["quantize"].status == status
    assert v["quantize"].baseline == "export" and v["quantize"].size_ratio == pytest.approx(0.25)
    assert v["quantize"].accuracy_delta == pytest.approx(100 * (int8_acc - 0.9))
    if status == "fail":
        assert any("loses" in p and "top-1 points" in p for p in v["quantize"].problems)


def test_accuracy_drop_is_judged_once():
    v, _ = verdicts([row("export"), row("quantize", "int8", accuracy=0.5)])
    assert [c.name for c in v["quantize"].checks if not c.ok] == ["accuracy_drop"]


@pytest.mark.parametrize("ratio_ci, status, word", [
    ((1.3, 1.5), "pass", "faster"), ((0.97, 1.04), "pass", "no measurable difference"), ((0.6, 0.8), "fail", "slower")])
def test_speed_is_decided_by_the_interval(ratio_ci, status, word):
    q = row("quantize", "int8", p50=1.0, ratio_ci={"export": list(ratio_ci)})
    v, _ = verdicts([row("export", p50=1.4), q])
    assert v["quantize"].status == status and v["quantize"].speed_verdict == word


def test_a_failed_parity_is_never_a_pass():
    q = row("quantize", "int8", parity={"source": "export", "ok": False, "problems": ["cosine 0.74 < 0.99"]})
    v, gate = verdicts([row("export"), q])
    assert v["quantize"].status == "fail" and "cosine 0.74 < 0.99" in v["quantize"].problems[0]
    assert gate.artifact == "quantize" and not gate.passed and gate.failed == v["quantize"].problems


def test_a_metric_that_cannot_be_computed_is_na_not_zero_and_not_pass():
    src = row("import", accuracy=None, accuracy_na="its 1000-class head does not match the data's 5 classes")
    v, _ = verdicts([src, row("train", accuracy=0.8)])
    assert v["import"].status == "n/a" and not v["import"].ok and "1000-class" in v["import"].problems[0]
    assert v["train"].status == "pass"
    assert src.metric_text() == "n/a"


def test_a_failed_check_outranks_na():
    src = row("import", accuracy=None, accuracy_na="head mismatch", size_bytes=50_000_000)
    v, _ = verdicts([src], gate={"model_mb": 10.0})
    assert v["import"].status == "fail"


def test_device_budget_and_run_gate():
    v, gate = verdicts([row("export", p50=80.0)], gate={"latency_ms": 50.0, "enforce": True})
    assert v["export"].status == "fail" and gate.enforce and gate.status == "fail"
    assert any(c.name == "latency_ms" and not c.ok and c.source.startswith("measured on") for c in v["export"].checks)


def test_judged_artifact_is_named_or_last():
    rows = [row("export"), row("quantize", "int8")]
    assert verdicts(rows)[1].artifact == "quantize"
    assert verdicts(rows, gate={"artifact": "export"})[1].artifact == "export"


def test_summary_round_trips_and_refuses_other_versions(tmp_path):
    rows, gate = judge.judge([row("export"), row("quantize", "int8", accuracy=0.5)], GATE, DEVICE)
    s = Summary(recipe="r", task={"name": "classification", "metric": "top-1"}, device={"name": "host"},
                status="success", run_dir=str(tmp_path), artifacts=rows, gate=gate)
    back = Summary.from_dict(s.to_dict())
    assert back == s and back.judged.verdict.status == "fail"
    from pipeline.report.schema import SchemaError

    with pytest.raises(SchemaError, match="schema_version 2.*re-run"):
        Summary.from_dict({**s.to_dict(), "schema_version": 2})
    with pytest.raises(SchemaError, match="not a pipeline summary"):
        Summary.from_dict({"artifacts": []})


def test_table_fits_120_columns_and_numbers_its_notes():
    from pipeline.report.table import summary_table

    rows = [row("train", fmt="torch", p50=3.2, runtime="torch 2.13.0+cpu", measured_on="this host, 2 threads"),
            row("export", fmt="tflite", p50=0.73, runtime="LiteRT 2.3.0", estimate={"latency_ms": 0.9, "label": "e"}),
            row("quantize_with_a_long_name", "int8", fmt="tflite", accuracy=0.5, p50=0.53, runtime="LiteRT 2.3.0",
                estimate={"latency_ms": 0.58, "label": "e"}, ratio_ci={"export": [1.2, 1.5]})]
    rows, gate = judge.judge(rows, GATE, DEVICE)
    s = Summary(recipe="r", task={"name": "classification", "metric": "top-1"}, device={"name": "host"},
                status="success", run_dir="x", artifacts=rows, gate=gate)
    text = summary_table(s, color=False, width=120)
    assert max(len(line) for line in text.splitlines()) <= 120, text
    assert "device ms" not in text  # an empty column is dropped
    assert "✗ FAIL [1]" in text and "[1] quantize_with_a_long_name: loses" in text
