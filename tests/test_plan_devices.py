"""One recipe, every device: the generic `export`/`quantize` types resolve to the device's deployment format at
planning time (no ML framework imported), a recipe can still pin a format, and parameters of every backend are
type-checked whichever device is chosen."""
from __future__ import annotations

import pytest

from pipeline.core.errors import ConfigError
from pipeline.core.plan import build_plan

EXPECTED = {  # device -> (export type, quantize type, quantize output)
    "pixel7": ("export_tflite", "quantize_tflite", "tflite"),
    "galaxy_s23": ("export_tflite", "quantize_tflite", "tflite"),
    "rpi4": ("export_tflite", "quantize_tflite", "tflite"),
    "coral_edgetpu": ("export_tflite", "quantize_tflite", "tflite"),
    "iphone15": ("export_coreml", "quantize_coreml", "coreml"),
    "iphone15_pro": ("export_coreml", "quantize_coreml", "coreml"),
    "jetson_orin_nano": ("export_onnx", "quantize_onnx", "onnx"),
    "host": ("export_onnx", "select_int8", ("onnx", "tflite", "openvino", "executorch")),  # measured here: decided at run time
}


def tasks(plan):
    return {t.name: t for t in plan.tasks}


@pytest.mark.parametrize("device", sorted(EXPECTED))
def test_device_picks_the_format(device, make_cfg):
    t = tasks(build_plan(make_cfg("recipe=mobilenet_int8", f"device={device}")))
    export, quantize, fmt = EXPECTED[device]
    assert t["export"].cls.type == export and t["quantize"].cls.type == quantize
    assert t["quantize"].output_format == fmt
    assert t["quantize"].params_dict["calibration_samples"] == 128  # the one knob every backend reads
    assert t["quantize"].inputs == ["export"] and t["parity"].inputs == ["train", "export", "quantize"]


def test_backend_parameters_reach_only_their_backend(make_cfg):
    jetson = tasks(build_plan(make_cfg("recipe=mobilenet_int8", "device=jetson_orin_nano", "stages.quantize.io=float")))
    assert jetson["quantize"].params_dict["method"] == "minmax" and "io" not in jetson["quantize"].params_dict
    pixel = tasks(build_plan(make_cfg("recipe=mobilenet_int8", "device=pixel7", "stages.quantize.io=float",
                                      "stages.quantize.calibration_samples=64")))
    assert pixel["quantize"].params_dict["io"] == "float" and "method" not in pixel["quantize"].params_dict
    assert pixel["quantize"].params_dict["calibration_samples"] == 64 and pixel["quantize"].params.precision == "int8"


def test_a_recipe_may_pin_the_format(make_cfg):
    t = tasks(build_plan(make_cfg("recipe=mobilenet_int8", "device=host", "stages.quantize.format=onnx")))
    assert t["quantize"].cls.type == "quantize_onnx"
    t = tasks(build_plan(make_cfg("recipe=mobilenet_int8", "device=jetson_orin_nano", "stages.export.format=tflite",
                                  "stages.quantize.format=tflite")))
    assert (t["export"].cls.type, t["quantize"].cls.type) == ("export_tflite", "quantize_tflite")


CASES = {
    "typo in a backend parameter": (["device=pixel7", "stages.quantize.metod=entropy"],
                                    ["stages.quantize.metod", "unknown parameter of stage type 'quantize'",
                                     "Did you mean 'method'"]),
    "wrong type for another backend": (["device=pixel7", "stages.quantize.per_channel=maybe"],
                                       ["stages.quantize.per_channel", "maybe"]),
    "pinned format with no implementation": (["device=pixel7", "stages.export.format=tensorrt"],
                                             ["no 'export' stage builds 'tensorrt' models", "coreml, executorch, onnx, openvino, tflite"]),
    "pinned format the input cannot feed": (["device=pixel7", "stages.quantize.format=coreml"],
                                            ["'quantize_coreml' takes coreml models", "input 'export' produces a tflite",
                                             "resolved to for device 'pixel7'"]),
    "keras model to an iPhone": (["device=iphone15", "model=keras_mobilenet_v2"],
                                 ["'export_coreml' takes torch models", "'train' produces a keras model"]),
    "core ml without a deployment target": (["device=pixel7", "stages.export.format=coreml",
                                             "stages.quantize.format=coreml"],
                                            ["device 'pixel7' names none", "deployment_target"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_generic_stage_errors(case, make_cfg):
    overrides, fragments = CASES[case]
    with pytest.raises(ConfigError) as e:
        build_plan(make_cfg("recipe=mobilenet_int8", *overrides))
    for frag in fragments:
        assert frag in str(e.value), f"{frag!r} missing from:\n{e.value}"


def test_keras_recipe_trains_keras_and_converts_to_tflite(make_cfg):
    t = tasks(build_plan(make_cfg("recipe=keras_mobilenet_int8", "device=pixel7")))
    assert t["train"].output_format == "keras"  # the train stage produces its model's framework
    assert (t["export"].cls.type, t["quantize"].cls.type) == ("export_tflite", "quantize_tflite")


def test_quantize_follows_a_pinned_export_format(make_cfg):
    """stages.export.format=executorch on a LiteRT phone: the generic quantize follows its input to ExecuTorch instead
    of the device's TFLite (which could not read a .pte)."""
    t = tasks(build_plan(make_cfg("recipe=mobilenet_int8", "device=pixel7", "stages.export.format=executorch")))
    assert t["export"].cls.type == "export_executorch" and t["quantize"].cls.type == "quantize_executorch"
    t = tasks(build_plan(make_cfg("recipe=mobilenet_int8", "device=pixel7")))
    assert t["quantize"].cls.type == "quantize_tflite"  # unpinned: the device decides, as before
