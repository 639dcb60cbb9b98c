"""The ExecuTorch and OpenVINO stages in a real run of the smoke recipe: `type: export` / `type: quantize` pinned to
the format, the artifacts evaluated, parity-checked and benchmarked in their own runtime on this host."""
from __future__ import annotations

import pytest

from pipeline import app
from pipeline.core.errors import ConfigError


def _artifacts(summary):
    return {a["name"]: a for a in summary["artifacts"]}


@pytest.mark.slow
def test_executorch_fp32_and_int8_in_a_run(make_cfg):
    cfg = make_cfg("recipe=tiny_int8", "device=pixel7", "tracking=none", "stages.export.type=export",
                   "stages.export.format=executorch", "stages.quantize.type=quantize",
                   "stages.quantize.format=executorch", "+stages.parity={type: parity, min_top1_agreement: 0.5}")
    summary = app.run(cfg).to_dict()
    assert summary["status"] == "success", summary["error"]
    arts = _artifacts(summary)
    assert (arts["export"]["format"], arts["export"]["precision"]) == ("executorch", "fp32")
    assert (arts["quantize"]["format"], arts["quantize"]["precision"]) == ("executorch", "int8")
    for name in ("export", "quantize"):
        assert arts[name]["runtime"].startswith("ExecuTorch"), arts[name]
        assert arts[name]["latency_ms"]["p50"] > 0 and arts[name]["accuracy"] is not None
    stages = {s["name"]: s for s in summary["stages"]}
    assert stages["export"]["metrics"]["portable_operators"] == 0  # XNNPACK took every MobileNetV2 operator
    assert stages["quantize"]["metrics"]["portable_operators"] == 0


@pytest.mark.slow
def test_openvino_with_accuracy_control_in_a_run(make_cfg):
    cfg = make_cfg("recipe=tiny_int8", "device=core_ultra7_laptop", "tracking=none", "stages.export.type=export",
                   "stages.quantize.type=quantize", "+stages.quantize.accuracy_control=true",
                   "+stages.quantize.accuracy_control_samples=64")
    summary = app.run(cfg).to_dict()  # the device deploys OpenVINO: `type: export` builds an IR without pinning
    assert summary["status"] == "success", summary["error"]
    arts = _artifacts(summary)
    assert arts["export"]["format"] == "openvino" and arts["quantize"]["precision"] == "int8"
    assert arts["quantize"]["runtime"].startswith("OpenVINO")
    q = {s["name"]: s for s in summary["stages"]}["quantize"]
    assert "accuracy_control_drop_points" in q["metrics"] and "layers_in_float" in q["metrics"]


def test_bad_openvino_settings_are_refused_at_plan_time(make_cfg):
    cfg = make_cfg("recipe=tiny_int8", "device=core_ultra7_laptop", "tracking=none", "stages.export.type=export",
                   "+stages.export.inference_precision=int4", "stages.quantize.type=quantize",
                   "+stages.quantize.preset=fast")
    with pytest.raises(ConfigError) as e:
        app.run(cfg)
    assert "inference_precision must be one of f32, bf16, f16" in str(e.value)
    assert "stages.quantize.preset: must be one of performance, mixed, got 'fast'" in str(e.value)
