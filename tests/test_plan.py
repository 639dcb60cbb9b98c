"""Every plan error is found before anything runs: exit status 2, a message naming the problem and the fix, and
nothing written (no run directory, no cache entry, no MLflow store)."""
from __future__ import annotations

import pytest

from conftest import run_cli
from pipeline.core.errors import ConfigError
from pipeline.core.plan import build_plan

CASES = {
    # name: (overrides, fragments the message must contain)
    "unknown stage type": (["stages.quantize.type=quantise_onnx"],
                           ["stages.quantize.type", "unknown stage type 'quantise_onnx'", "Did you mean 'quantize_onnx'",
                            "Registered types:", "export_onnx", "train"]),
    "unknown input": (["stages.quantize.inputs=[exprt]"],
                      ["stages.quantize.inputs", "'exprt' is not a stage of this recipe", "Did you mean 'export'",
                       "Stages: train, export, quantize"]),
    "cycle": (["stages.export.inputs=[quantize]"], ["cycle", "export -> quantize -> export"]),
    "format mismatch": (["stages.quantize.inputs=[train]"],
                        ["'quantize_onnx' takes onnx models", "'train' produces a torch model",
                         "Add an export stage between them (type: export_onnx"]),
    "unknown parameter": (["stages.quantize.calibraton_samples=64"],
                          ["stages.quantize.calibraton_samples", "unknown parameter", "Did you mean 'calibration_samples'"]),
    "wrong type": (["stages.quantize.calibration_samples=many"], ["stages.quantize.calibration_samples", "many"]),
    "bad value": (["stages.quantize.calibration_samples=0"], ["stages.quantize.calibration_samples: must be an integer >= 1, got 0"]),
    "bad calibration method": (["stages.quantize.method=avg"], ["stages.quantize.method: must be one of minmax, entropy, percentile, got 'avg'"]),
    "imagefolder without path": (["data=imagefolder"], ["data.path", "data.path=DIR"]),
    "missing data path": (["data=imagefolder", "data.path=/nonexistent/photos"],
                          ["data.path", "/nonexistent/photos", "does not exist"]),
    "unknown model": (["model.name=mobilenet_v9"], ["model.name", "mobilenet_v9", "Available: ", "efficientnet_lite0",
                                                         "mobilenet_v2", "mobilenet_v3_large", "keras_mobilenet_v2"]),
    "force unknown stage": (["cache.force=[quantise]"], ["cache.force", "'quantise' is not a stage"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_plan_error_message(case, make_cfg):
    overrides, fragments = CASES[case]
    # the recipe is device-driven: a Jetson deploys ONNX, so `quantize` is quantize_onnx there
    cfg = make_cfg("recipe=mobilenet_int8", "device=jetson_orin_nano", *overrides)
    with pytest.raises(ConfigError) as e:
        build_plan(cfg)
    for frag in fragments:
        assert frag in str(e.value), f"{frag!r} missing from:\n{e.value}"


def test_all_problems_are_reported_together(make_cfg):
    cfg = make_cfg("recipe=mobilenet_int8", "stages.quantize.type=nope", "stages.evaluate.inputs=[ghost]")
    with pytest.raises(ConfigError) as e:
        build_plan(cfg)
    assert "2 problems" in str(e.value) and "nope" in str(e.value) and "ghost" in str(e.value)


CLI_CASES = {
    "format mismatch": ["stages.quantize.inputs=[train]"],
    "cycle": ["stages.export.inputs=[quantize]"],
    "unknown recipe": ["recipe=mobilenet_int9"],
    "unknown device": ["device=pixel99"],
    "unknown top-level key": ["trackin.uri=x"],
    "missing data path": ["data=imagefolder", "data.path=/nonexistent/photos"],
}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_cli_exits_2_and_writes_nothing(case, tmp_path):
    overrides = CLI_CASES[case]
    if not any(o.startswith("recipe=") for o in overrides):
        overrides = ["recipe=mobilenet_int8", *overrides]
    out = run_cli(*overrides, f"paths.outputs={tmp_path / 'outputs'}", cwd=tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    assert list(tmp_path.iterdir()) == []  # no outputs/, no run directory, no MLflow store, no Hydra log


def test_unknown_recipe_and_device_list_the_choices(tmp_path):
    out = run_cli("recipe=mobilenet_int9", cwd=tmp_path)
    assert out.returncode == 2
    assert "mobilenet_int8" in out.stderr and "tiny_int8" in out.stderr
    out = run_cli("recipe=mobilenet_int8", "device=pixel99", cwd=tmp_path)
    assert out.returncode == 2
    assert "pixel7" in out.stderr and "host" in out.stderr


def test_plan_order_and_per_input_expansion(make_cfg):
    plan = build_plan(make_cfg("recipe=mobilenet_int8"))
    names = [t.name for t in plan.tasks]
    assert names.index("train") < names.index("export") < names.index("quantize")
    assert {"evaluate[train]", "evaluate[export]", "evaluate[quantize]", "benchmark"} <= set(names)
    assert plan.descendants({"export"}) == {"quantize", "parity", "evaluate", "benchmark", "profile"}


def test_print_resolved_recipe(tmp_path):
    out = run_cli("recipe=mobilenet_int8", "stages.quantize.calibration_samples=64", "--cfg", "job", "--resolve",
                  cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "calibration_samples: 64" in out.stdout and "recipe: mobilenet_int8" in out.stdout
