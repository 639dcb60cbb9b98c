"""The first diverging layer: an int8 model whose parity fails names the layer where its activations left the float
model's, per layer in graph order, as JSON + PNG."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from pipeline import runtimes

from pipeline.library import diagnose
from pipeline.convert.onnx import QdqOptions, export_torch, quantize_qdq


class Outlier(nn.Module):
    """A hidden unit whose range is 1000x the others: per-tensor int8 of fc1's activations rounds the units that
    carry the classes to zero. fc1's output still looks right (the big unit dominates its cosine); fc2's does not."""

    def __init__(self, outlier: float = 1000.0):
        super().__init__()
        self.fc0 = nn.Linear(16, 16)
        self.fc1, self.fc2 = nn.Linear(16, 8), nn.Linear(8, 4)
        with torch.no_grad():
            self.fc1.weight[0] = 0.0
            self.fc1.bias[0] = outlier
            self.fc2.weight[:, 0] = 0.0
            self.fc2.bias.zero_()

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(torch.relu(self.fc0(x)))))


def _pair(tmp_path, outlier: float):
    torch.manual_seed(0)
    model = Outlier(outlier).eval()
    fp32, int8 = tmp_path / "model.onnx", tmp_path / "model.int8.onnx"
    export_torch(model, (1, 16), fp32)
    x = np.random.default_rng(0).standard_normal((48, 16)).astype(np.float32)
    quantize_qdq(fp32, int8, x[:32], QdqOptions())
    return fp32, int8, x[32:]


def test_failing_parity_names_the_first_diverging_layer(tmp_path):
    fp32, int8, x = _pair(tmp_path, outlier=1000.0)
    ref = runtimes.load("onnx", fp32, {}, threads=1).predict(x).argmax(1)
    got = runtimes.load("onnx", int8, {}, threads=1).predict(x).argmax(1)
    assert (ref == got).mean() < 0.9  # the int8 model really fails parity

    report = diagnose.first_diverging_layer("onnx", fp32, int8, x)
    names = [l["layer"] for l in report["layers"]]
    assert names == ["input", "relu (after fc0)", "relu_1 (after fc1)", "fc2"], names  # graph order, named by module
    first = report["first_diverging"]
    assert first["layer"] == "fc2" and first["cosine"] < diagnose.DEFAULT_COSINE, report["layers"]
    assert all(l["cosine"] >= diagnose.DEFAULT_COSINE for l in report["layers"][: first["index"]])
    msg = diagnose.message(report)
    assert msg.startswith("first diverging layer: fc2 (Gemm)") and "cosine" in msg and "SNR" in msg

    js, png = diagnose.write(report, tmp_path / "report")
    assert json.loads(js.read_text())["first_diverging"]["layer"] == "fc2"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_healthy_int8_model_has_no_diverging_layer(tmp_path):
    fp32, int8, x = _pair(tmp_path, outlier=1.0)
    report = diagnose.first_diverging_layer("onnx", fp32, int8, x)
    assert report["first_diverging"] is None, report["layers"]
    assert diagnose.message(report).startswith("no layer under cosine 0.98")


def test_unrelated_models_are_refused(tmp_path):
    fp32, _, x = _pair(tmp_path, outlier=1.0)
    with pytest.raises(ValueError, match="share no quantized tensor"):
        diagnose.first_diverging_layer("onnx", fp32, fp32, x)
    with pytest.raises(ValueError, match="no per-layer comparison for 'coreml'"):
        diagnose.first_diverging_layer("coreml", fp32, fp32, x)


def test_onnx_accuracy_control_keeps_the_diverging_layer_in_float(tmp_path):
    from pipeline.convert.nncf_onnx import quantize_with_accuracy_control

    torch.manual_seed(0)
    model = Outlier().eval()
    export_torch(model, (1, 16), tmp_path / "model.onnx")
    x = np.random.default_rng(0).standard_normal((96, 16)).astype(np.float32)
    with torch.no_grad():
        y = model(torch.from_numpy(x)).numpy().argmax(1)
    facts = quantize_with_accuracy_control(tmp_path / "model.onnx", x[:32], x[32:], y[32:],
                                           tmp_path / "model.int8ac.onnx", max_drop=0.02)
    assert facts["plain_int8_drop"] > 0.02 and facts["met"], facts
    assert facts["reverted_to_float"] == ["fc2"], facts  # the layer the per-layer comparison names first
    assert runtimes.load("onnx", tmp_path / "model.int8ac.onnx", {}, threads=1).predict(x[:4]).shape == (4, 4)


class OutlierImageNet(nn.Module):
    """Outlier on images: 3x8x8 pixels flattened into the same three layers, 10 classes (the digits')."""

    def __init__(self):
        super().__init__()
        self.fc0 = nn.Linear(3 * 8 * 8, 16)
        self.fc1, self.fc2 = nn.Linear(16, 8), nn.Linear(8, 10)
        with torch.no_grad():
            self.fc1.weight[0] = 0.0
            self.fc1.bias[0] = 1000.0
            self.fc2.weight[:, 0] = 0.0
            self.fc2.bias.zero_()

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(torch.relu(self.fc0(x.flatten(1))))))


def test_a_parity_stage_failing_on_int8_names_the_first_diverging_layer(tmp_path):
    from omegaconf import OmegaConf

    from conftest import compose_cfg
    from pipeline import app
    from pipeline.core.errors import StageError

    torch.manual_seed(0)
    fp32 = tmp_path / "outlier.onnx"
    export_torch(OutlierImageNet().eval(), (1, 3, 8, 8), fp32)
    outputs = tmp_path / "outputs"
    cfg = compose_cfg(["recipe=tiny_int8", "device=jetson_orin_nano", "tracking=none", "model.input_size=8"], outputs)
    cfg.stages = OmegaConf.create({
        "mine": {"type": "import_model", "path": str(fp32)},
        "quantize": {"type": "quantize_onnx", "inputs": ["mine"], "calibration_samples": 32},
        "parity": {"type": "parity", "inputs": ["quantize"], "min_cosine": 0.99, "samples": 64}})
    with pytest.raises(StageError) as e:
        app.run(cfg)
    msg = str(e.value)
    assert "stage 'quantize' (onnx int8) diverged from its source 'mine'" in msg
    assert "Per-layer, int8 against float: first diverging layer: fc2 (Gemm)" in msg
    (run_dir,) = (outputs / "runs" / "tiny_int8").iterdir()
    report = json.loads((run_dir / "reports" / "parity" / "diverging_layer_quantize.json").read_text())
    assert report["first_diverging"]["layer"] == "fc2"  # kept in the run folder although the stage failed
    assert (run_dir / "reports" / "parity" / "diverging_layer_quantize.png").read_bytes()[:4] == b"\x89PNG"
