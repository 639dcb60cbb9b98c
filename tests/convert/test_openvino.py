"""OpenVINO: IR conversion, NNCF int8, accuracy-controlled int8 that reverts the costliest layers to float, and the
runtime with its performance hints."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pipeline import runtimes
from pipeline.convert import openvino as ovc


class Tiny(nn.Module):
    def __init__(self, classes: int = 4):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(8, classes)

    def forward(self, x):
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(self.body(x), 1), 1))


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).standard_normal((32, 3, 12, 12)).astype(np.float32)


@pytest.fixture(scope="module")
def fp32_ir(tmp_path_factory):
    torch.manual_seed(0)
    model = Tiny().eval()
    path = tmp_path_factory.mktemp("ov") / "model.xml"
    facts = ovc.export_ir(model, (1, 3, 12, 12), path)
    return model, path, facts


def test_ir_runs_any_batch_and_matches_torch_in_f32(fp32_ir, images):
    model, path, facts = fp32_ir
    assert path.with_suffix(".bin").exists() and facts["dynamic_batch"]
    ov = runtimes.load("openvino", path, {"openvino": {"inference_precision": "f32"}}, threads=1)
    assert ov.runtime.startswith("OpenVINO 2026") and "f32 compute" in ov.runtime and "LATENCY" in ov.runtime
    with torch.no_grad():
        ref = model(torch.from_numpy(images)).numpy()
    assert np.abs(ov.predict(images) - ref).max() < 1e-4
    info = runtimes.describe("openvino", path)
    assert info["inputs"][0]["name"] == "input" and info["inputs"][0]["shape"] == [-1, 3, 12, 12]
    assert info["outputs"][0]["name"] == "logits" and info["fake_quantize"] == 0


def test_default_precision_is_what_the_plugin_picks(fp32_ir):
    _, path, _ = fp32_ir
    here = ovc.default_inference_precision()
    ov = runtimes.load("openvino", path, {}, threads=1)  # no hint: the plugin's default
    assert ov.inference_precision == here and f"{here} compute" in ov.runtime


def test_nncf_int8_quantizes_the_convolutions(fp32_ir, images, tmp_path):
    _, path, _ = fp32_ir
    out = tmp_path / "model.int8.xml"
    facts = ovc.quantize_ir(path, images[:16], out)
    assert facts["quantized_operations"] >= 2 and facts["calibration_samples"] == 16
    assert runtimes.describe("openvino", out)["fake_quantize"] > 0
    y = runtimes.load("openvino", out, {}, threads=2).predict(images)
    assert y.shape == (32, 4) and np.isfinite(y).all()


def test_bad_settings_are_refused_naming_the_choices(fp32_ir):
    _, path, _ = fp32_ir
    with pytest.raises(ValueError, match="inference_precision must be one of f32, bf16, f16"):
        runtimes.load("openvino", path, {"openvino": {"inference_precision": "int4"}}, threads=1)
    with pytest.raises(ValueError, match="performance_mode must be one of LATENCY"):
        runtimes.load("openvino", path, {"openvino": {"performance_mode": "fast"}}, threads=1)
    missing = [d for d in ("GPU", "NPU") if d not in " ".join(ovc_devices())]
    for d in missing:
        with pytest.raises(ValueError, match=f"no {d} plugin with hardware on this host.*openvino.device=CPU"):
            runtimes.load("openvino", path, {"openvino": {"device": d}}, threads=1)


def ovc_devices():
    from pipeline.runtimes.openvino_rt import available_devices

    return available_devices()


def test_not_an_ir_is_named_with_the_fix(tmp_path):
    bad = tmp_path / "model.xml"
    bad.write_text("<net>")
    with pytest.raises(ValueError, match="OpenVINO cannot load .*cache.force"):
        runtimes.load("openvino", bad, {}, threads=1)


class Outlier(nn.Module):
    """One hidden unit with a range 1000x the others: per-tensor int8 of the hidden activations rounds the units that
    carry the classes to zero, so plain int8 predicts one class; fc2 in float restores the model."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(16, 8), nn.Linear(8, 4)
        with torch.no_grad():
            self.fc1.weight[0] = 0.0
            self.fc1.bias[0] = 1000.0
            self.fc2.weight[:, 0] = 0.0
            self.fc2.bias.zero_()

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def test_accuracy_control_meets_the_drop_plain_int8_misses_and_names_the_float_layers(tmp_path):
    torch.manual_seed(0)
    model = Outlier().eval()
    x = np.random.default_rng(0).standard_normal((96, 16)).astype(np.float32)
    with torch.no_grad():
        y = model(torch.from_numpy(x)).numpy().argmax(1)  # labels = the float model's answers: fp32 top-1 is 100%
    ovc.export_ir(model, (1, 16), tmp_path / "model.xml")
    facts = ovc.quantize_ir_with_accuracy_control(tmp_path / "model.xml", x[:32], x[32:], y[32:],
                                                  tmp_path / "model.int8ac.xml", max_drop=0.02)
    assert facts["top1"]["fp32"] == 1.0
    assert facts["plain_int8_drop"] > 0.02, facts  # plain int8 misses the budget ...
    assert facts["met"] and facts["drop"] <= 0.02, facts  # ... accuracy control meets it
    assert facts["reverted_to_float"] == ["fc2"], facts  # by keeping fc2 in float, and fc1 in int8
    assert facts["quantized_operations"] >= 1
    got = runtimes.load("openvino", tmp_path / "model.int8ac.xml", {}, threads=1).predict(x[32:]).argmax(1)
    assert (got == y[32:]).mean() >= 0.98
