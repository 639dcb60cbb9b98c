"""Plan-time truth: a route that cannot produce the device's format is refused before any work (exit 2) with a fix
that leads to a file the device runs; an fp32 export asks for no calibration images."""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from conftest import compose_cfg
from pipeline.core import plan
from pipeline.core.errors import ConfigError


def _tiny():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(4, 10)).eval()


def _plan(tmp_path, device: str, stages: dict):
    cfg = compose_cfg(["recipe=tiny_int8", "tracking=none", f"device={device}", "model.input_size=16"],
                      tmp_path / "outputs")
    cfg.stages = OmegaConf.create(stages)
    return plan.build_plan(cfg)


@pytest.mark.bad_input
def test_onnx_import_on_a_litert_phone_is_refused_without_an_undeployable_fix(tmp_path):
    path = tmp_path / "m.onnx"
    torch.onnx.export(_tiny(), (torch.zeros(1, 3, 16, 16),), str(path), dynamo=True).save(str(path))
    with pytest.raises(ConfigError) as e:
        _plan(tmp_path, "pixel7", {"mine": {"type": "import_model", "path": str(path)},
                                   "quantize": {"type": "quantize", "inputs": ["mine"]}})
    msg = str(e.value)
    assert e.value.exit_code == 2
    assert "runs litert (tflite)" in msg and "PyTorch or Keras source" in msg
    assert "format=onnx" not in msg and "format=FORMAT" not in msg  # no fix that ends in a file the phone does not run


@pytest.mark.bad_input
def test_imported_tflite_with_a_quantize_stage_is_refused_at_plan_time(tmp_path):
    import litert_torch

    path = tmp_path / "m.tflite"
    litert_torch.convert(_tiny(), (torch.zeros(1, 3, 16, 16),)).export(str(path))
    with pytest.raises(ConfigError) as e:
        _plan(tmp_path, "pixel7", {"mine": {"type": "import_model", "path": str(path)},
                                   "quantize": {"type": "quantize", "inputs": ["mine"]}})
    msg = str(e.value)
    assert "stages.quantize: LiteRT int8 re-converts the PyTorch or Keras model" in msg
    assert "export_tflite, precision: int8" in msg and "remove this stage" in msg


def test_fp32_export_asks_for_no_calibration_images(tmp_path):
    stages = {"train": {"type": "train", "epochs": 1},
              "export": {"type": "export_tflite", "inputs": ["train"], "precision": "fp32",
                         "calibration_samples": 100000}}
    _plan(tmp_path, "pixel7", stages)  # more than the training split: irrelevant for fp32
    stages["export"]["precision"] = "int8"
    with pytest.raises(ConfigError, match="calibration_samples: 100000 is more than"):
        _plan(tmp_path, "pixel7", stages)
