"""MLflow as a report, against a real SQLite MLflow store: at most ~30 curated parameters with the device catalogue
as one JSON artifact, a run name carrying the overrides, a description, the summary card (HTML + Markdown with the
plots) on the parent run, and one MLflow 3 LoggedModel per artifact whose metrics can be searched per model."""
from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

import summaries
from pipeline.report import card
from pipeline.report.schema import Summary

from pipeline.tracking import tracker as tracking

MEASURED = "this host (AMD EPYC), onnxruntime 1.31.1, 2 thread(s), batch 1, load average 1.90 before, 2.05 after"


def _cfg():
    device = {"name": "pixel7", "display_name": "Google Pixel 7", "runtime": "litert", "formats": ["tflite", "onnx"],
              "threads": 4, "soc": "Tensor G2", "ram_gb": {"value": 8, "source": "[S] 8 GB"},
              "memory_bandwidth_gbps": {"value": 44, "source": "[E]"},
              "compute_units": {f"u{i}": {"kind": "cpu", "peak_gops": {"fp32": {"value": i, "source": "[E] x"}}}
                                for i in range(30)},  # a catalogue entry far too big for parameters
              "budgets": {"latency_ms": 50, "fps": 30, "model_mb": 20}}
    return OmegaConf.create({
        "recipe": "mobilenet_int8", "seed": 0, "model": {"name": "mobilenet_v2", "input_size": 48, "width_mult": 1.0},
        "data": {"name": "digits", "path": None}, "device": device, "gate": {"max_accuracy_drop": 1.0},
        "stages": {"train": {"type": "train", "epochs": 15},
                   "export": {"type": "export", "inputs": ["train"]},
                   "quantize": {"type": "quantize", "inputs": ["export"], "calibration_samples": 64,
                                "method": "minmax"},
                   "benchmark": {"type": "benchmark", "inputs": ["export", "quantize"], "iterations": 50}}})


def _summary():
    def row(name, fmt, prec, size, acc, p50, ci, speedup=None, ok=True):
        return summaries.row(
            name, fmt, prec, size, acc, ok, [] if ok else ["slower"], speedup=speedup,
            latency_ms=None if p50 is None else {"p50": p50, "p90": p50 * 1.1, "p50_ci": ci},
            measured_on=MEASURED if p50 else None, cache_key=f"key-{name}", runtime="LiteRT 2.3.0",
            estimate={"latency_ms": 1.05, "label": "estimate for Google Pixel 7 (cpu, fp32), 80% interval 0.8-1.3 "
                                                   "ms; not a measurement"})

    return Summary.from_dict(summaries.summary(
        [row("train", "torch", "fp32", 9_170_000, 0.9889, None, None),
         row("export", "tflite", "fp32", 9_000_000, 0.9889, 0.47, [0.44, 0.51]),
         row("quantize", "tflite", "int8", 2_350_000, 0.9861, 0.31, [0.29, 0.33], 1.51)],
        recipe="mobilenet_int8", device={"name": "pixel7", "display_name": "Google Pixel 7", "runtime": "litert"}))


def test_curated_params_and_run_name():
    overrides = ["recipe=mobilenet_int8", "device=pixel7", "stages.quantize.calibration_samples=64",
                 "paths.outputs=/somewhere", "hydra.job.num=3"]
    params, rest = card.curated_params(_cfg(), overrides)
    assert len(params) <= 30
    assert params["device.name"] == "pixel7" and params["device.display_name"] == "Google Pixel 7"
    assert params["device.ram_gb"] == "8" and params["stages.quantize.calibration_samples"] == "64"
    assert not any(k.startswith("override.") for k in params)  # recipe, device and stage knobs: shown once each
    assert not any(k.startswith("device.compute_units") for k in params) and "paths.outputs" not in str(params)
    catalog = json.loads(card.device_catalog_json(_cfg(), rest))
    assert len(catalog["device"]["compute_units"]) == 30
    assert card.run_name("mobilenet_int8", "pixel7", overrides) == "mobilenet_int8@pixel7 calib=64"
    assert card.run_name("tiny_int8", "host", "") == "tiny_int8@host"
    assert card.run_name("tiny_int8", "host", "", run_id="02408d") == "tiny_int8@host #02408d"
    assert card.run_name("tiny_int8", "host", "a.b=" + "x" * 200, run_id="02408d").endswith("… #02408d")
    few, more = card.curated_params(_cfg(), overrides, max_params=5)
    assert len(few) == 5 and more  # what does not fit is kept for the JSON artifact


def test_card_renders_table_notes_and_plots(tmp_path):
    png = tmp_path / "leaderboard.png"
    _plot(png)
    md = card.card_markdown(_summary(), {"accuracy vs latency": str(png)})
    assert "| stage | format | precision |" in md and "| quantize | tflite | int8 | 2.35 | 98.61 | 0.31 (0.29-0.33)" in md
    assert "![accuracy vs latency](leaderboard.png)" in md and "judged artifact: quantize" in md
    page = card.card_html(_summary(), {"accuracy vs latency": str(png)})
    assert "<table>" in page and "data:image/png;base64," in page and "✓ pass" in page


def _plot(path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0.31, 0.47], [98.6, 98.9], "o-")
    fig.savefig(path)
    plt.close(fig)


def test_parent_run_reads_like_a_report(tmp_path):
    """Through the MLflow API: description, card, plots, <= 30 params, LoggedModels with searchable metrics."""
    outputs = tmp_path / "outputs"
    tr = tracking.Tracker(tracking.local_uri(outputs), "mobilenet_int8", outputs / "mlartifacts")
    client = MlflowClient(tr.uri)
    overrides = ["stages.quantize.calibration_samples=64"]
    params, rest = card.curated_params(_cfg(), overrides)
    pid = tr.start(card.run_name("mobilenet_int8", "pixel7", overrides), params, {"recipe": "mobilenet_int8"})
    d = tmp_path / "device"
    d.mkdir()
    (d / "device.json").write_text(card.device_catalog_json(_cfg(), rest))
    client.log_artifact(pid, str(d / "device.json"))
    stage_runs = {}
    for stage in ("train", "export", "quantize"):
        r = client.create_run(tr.experiment_id, run_name=stage, tags={"mlflow.parentRunId": pid})
        stage_runs[stage] = r.info.run_id
    png = tmp_path / "leaderboard.png"
    _plot(png)
    written = card.log_card(client, pid, _summary(), {"accuracy vs latency": str(png)},
                                     "MobileNetV2 -> the device's format -> int8")
    ids = card.log_logged_models(client, tr.experiment_id, pid, _summary(), stage_runs)
    for rid in stage_runs.values():
        client.set_terminated(rid)
    tr.end("FINISHED")

    run = client.get_run(pid)
    assert run.info.run_name == "mobilenet_int8@pixel7 calib=64"
    assert len(run.data.params) <= 30 and run.data.params["device.name"] == "pixel7"
    note = run.data.tags["mlflow.note.content"]
    assert "MobileNetV2" in note and "Judged artifact: `quantize`" in note
    names = {a.path for a in client.list_artifacts(pid)}
    assert {"summary_card.html", "summary_card.md", "leaderboard.png", "device.json"} <= names
    assert set(written) == {"summary_card.html", "summary_card.md", "leaderboard.png"}

    assert set(ids) == {"train", "export", "quantize"}
    models = client.search_logged_models([tr.experiment_id])
    assert len(models) == 3
    fast = client.search_logged_models([tr.experiment_id], filter_string="metrics.latency_p50_ms < 0.4")
    assert [m.name for m in fast] == ["mobilenet_int8-quantize"]
    lm = client.get_logged_model(ids["quantize"])
    got = {m.key: m.value for m in lm.metrics}
    assert got["top1_pct"] == pytest.approx(98.61) and got["latency_p50_ci_low_ms"] == pytest.approx(0.29)
    assert lm.tags["format"] == "tflite" and lm.tags["precision"] == "int8" and lm.source_run_id == stage_runs["quantize"]
    assert str(lm.status) in ("READY", "LoggedModelStatus.READY") or getattr(lm.status, "name", "") == "READY"
    outs = client.get_run(pid).outputs
    assert {o.model_id for o in outs.model_outputs} == set(ids.values())
