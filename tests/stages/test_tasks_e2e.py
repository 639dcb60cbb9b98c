"""Each task through a whole recipe at tiny size: train -> the device's format -> int8 -> parity per output ->
evaluate with the task's metric -> benchmark -> profile, logged to a real (embedded) MLflow store.

Tiny on purpose (32 px, a few hundred composed canvases, 2 epochs, 1 thread): the numbers are not the point, the
fields are. The recipes' real numbers are in docs/tasks.md."""
from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from conftest import compose_cfg

TINY = ["model.input_size=32", "data.train_images=160", "data.val_images=48", "stages.train.epochs=2",
        "stages.train.threads=1", "stages.quantize.calibration_samples=32", "stages.parity.samples=32",
        "stages.benchmark.warmup=2", "stages.benchmark.iterations=10", "gate.max_accuracy_drop=100"]


def _run(tmp_path, recipe: str, device: str, *extra: str) -> dict:
    from pipeline.app import run

    return run(compose_cfg([f"recipe={recipe}", f"device={device}", *TINY, *extra], tmp_path / "outputs")).to_dict()


def _check(summary: dict, task: str, metrics: tuple[str, ...], outputs: list[str], fmt: str,
           estimated: bool = True) -> dict:
    assert summary["status"] == "success"
    arts = {a["name"]: a for a in summary["artifacts"]}
    q, export = arts["quantize"], arts["export"]
    assert (q["format"], q["precision"], export["format"]) == (fmt, "int8", fmt)
    stages = {s["name"]: s for s in summary["stages"]}
    for name in ("train", "export", "quantize"):  # the task metric, fp32 and int8, each in its own runtime
        got = stages[f"evaluate[{name}]"]["metrics"]
        assert set(metrics) <= set(got) and arts[name]["accuracy"] == got[metrics[0]]
    assert q["verdict"]["accuracy_delta"] is not None  # int8 against its fp32 baseline, in points of the primary metric
    par = q["parity"]
    assert par["source"] == "export" and par["task"] == task and list(par["outputs"]) == outputs
    for per in par["outputs"].values():
        assert {"cosine", "cosine_min", "max_abs_error", "mean_abs_error", "snr_db"} <= set(per)
        assert per["cosine"] > 0.9
    assert q["latency_ms"]["p50"] > 0 and "this host" in q["measured_on"]  # host latency, saying where it is from
    if estimated:  # the device estimate, with its interval
        assert q["estimate"]["latency_ms"] > 0 and "not a measurement" in q["estimate"]["label"]
    else:  # a unit the estimator's corpus never measured: no number, the reason instead
        assert q["estimate"] is None and "no gpu" in q["no_estimate"]
    client = MlflowClient(summary["mlflow"]["tracking_uri"])
    logged = client.get_run(summary["mlflow"]["run_id"]).data.metrics
    assert {"quantize.accuracy", "export.accuracy", "quantize.latency_p50_ms"} <= set(logged)
    return arts


@pytest.mark.slow
def test_detector_on_pixel7_full_integer_tflite(tmp_path):
    s = _run(tmp_path, "detector_int8", "pixel7", "stages.parity.min_map50_agreement=null")
    arts = _check(s, "detection", ("map50_95", "map50"), ["heatmap", "boxes"], "tflite")
    facts = arts["quantize"]["facts"]
    assert facts["integer_only"] and not facts["float_operators"]


@pytest.mark.slow
def test_segmenter_on_jetson_int8_onnx(tmp_path):
    s = _run(tmp_path, "segmenter_int8", "jetson_orin_nano", "stages.parity.min_pixel_agreement=0.5")
    arts = _check(s, "segmentation", ("miou", "pixel_acc"), ["logits"], "onnx", estimated=False)
    assert "pixel_agreement" in arts["quantize"]["parity"] and "miou_agreement" in arts["quantize"]["parity"]


@pytest.mark.bad_input
@pytest.mark.parametrize("overrides, words", [
    (["recipe=mobilenet_int8", "model=centernet_mobilenet_v2"],
     ["'centernet_mobilenet_v2' is a detection model but task='classification'", "set task=detection"]),
    (["recipe=detector_int8", "data=digits"],
     ["task 'detection' cannot read data set 'digits'", "data=digits_detection"]),
    (["recipe=segmenter_int8", "stages.parity.min_map50_agreement=0.9"],
     ["min_map50_agreement applies to task detection, but task='segmentation'", "min_pixel_agreement"]),
    (["recipe=tiny_int8", "task=depth"], ["unknown task 'depth'", "classification, detection, segmentation, none"]),
])
def test_a_model_or_data_that_does_not_fit_the_task_is_refused_at_plan_time(tmp_path, overrides, words):
    from pipeline.core.errors import ConfigError
    from pipeline.core.plan import build_plan

    with pytest.raises(ConfigError) as e:
        build_plan(compose_cfg([*overrides, "device=pixel7", "tracking=none"], tmp_path / "outputs"))
    assert all(w in str(e.value) for w in words), str(e.value)


def test_the_task_is_in_the_key_of_every_stage_that_reads_it(tmp_path):
    from pipeline.core import settings
    from pipeline.stages import discover

    cfg = compose_cfg(["recipe=tiny_int8", "device=host", "tracking=none"], tmp_path / "outputs")
    other = compose_cfg(["recipe=tiny_int8", "device=host", "tracking=none", "task=detection"], tmp_path / "outputs")
    reg = discover()
    for stage_type in ("train", "evaluate", "parity", "quantize_onnx", "quantize_tflite", "import_model"):
        cls = reg[stage_type]
        assert "task" in cls.reads, stage_type
        assert (settings.resolve(stage_type, cls.reads, cfg).values
                != settings.resolve(stage_type, cls.reads, other).values), stage_type
