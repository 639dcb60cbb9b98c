"""One input path: every quantizer calibrates on exactly what its runtime is fed at evaluation, for a model that
declares its own preprocessing (BGR pixels minus a per-channel mean, no scaling: the Caffe convention). Each back end's
int8 artifact records what its quantizer was fed (`quantization.calibration_input`); the test feeds the same training
images through the runtime the evaluate stage uses and compares what reaches the loaded model."""
from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from conftest import compose_cfg

NET = textwrap.dedent('''
    import torch
    from torch import nn

    class CaffeNet(nn.Module):
        """Takes BGR pixels minus the channel means (about -123..152), as Caffe-era models do."""
        def __init__(self, num_classes: int = 10):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
            self.fc = nn.Linear(16, num_classes)

        def forward(self, x):
            x = torch.relu(self.conv(x))
            x = torch.relu(self.conv2(x))
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))
''')
SIGNATURE = {"channel_order": "BGR", "scale": 1.0, "mean": [104.0, 117.0, 123.0], "std": [1.0, 1.0, 1.0]}
ROUTES = {  # back end -> the stages after the import, the int8 stage last
    "onnxruntime": {"export": {"type": "export_onnx", "inputs": ["mine"]},
                    "int8": {"type": "quantize_onnx", "inputs": ["export"], "calibration_samples": 16}},
    "litert": {"int8": {"type": "export_tflite", "inputs": ["mine"], "precision": "int8", "calibration_samples": 16}},
    "openvino": {"export": {"type": "export_openvino", "inputs": ["mine"]},
                 "int8": {"type": "quantize_openvino", "inputs": ["export"], "calibration_samples": 16}},
    "executorch": {"export": {"type": "export_executorch", "inputs": ["mine"]},
                   "int8": {"type": "quantize_executorch", "inputs": ["export"], "calibration_samples": 16}},
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    d = tmp_path_factory.mktemp("caffe")
    (d / "caffe_nets.py").write_text(NET)
    import sys

    sys.path.insert(0, str(d))
    import caffe_nets

    torch.manual_seed(0)
    path = d / "caffe.pt"
    torch.save(caffe_nets.CaffeNet().state_dict(), path)
    yield path
    sys.path.remove(str(d))


@pytest.mark.parametrize("backend", list(ROUTES))
@pytest.mark.slow
def test_calibration_feeds_what_evaluation_feeds(tmp_path, checkpoint, backend):
    from pipeline import runtimes
    from pipeline.library import calibration
    from pipeline import data as data_mod
    from pipeline.app import run

    cfg = compose_cfg(["recipe=tiny_int8", "tracking=none", "device=host", "model.input_size=16"],
                      tmp_path / "outputs")
    cfg.stages = OmegaConf.create({"mine": {"type": "import_model", "path": str(checkpoint),
                                            "_target_": "caffe_nets.CaffeNet", "signature": SIGNATURE},
                                   **ROUTES[backend]})
    s = run(cfg).to_dict()
    row = next(a for a in s["artifacts"] if a["name"] == "int8")
    stage = next(r for r in s["stages"] if r["name"] == "int8")
    assert row["precision"] == "int8"
    from pipeline.core.cache import Cache

    entry = Cache(tmp_path / "outputs" / "cache").lookup(stage["cache_key"])
    art = entry.manifest["artifact"]
    fed = art["meta"]["quantization"]["calibration_input"]

    # what the runtime is fed at evaluation, for the same training images the quantizer sampled
    data = data_mod.load(cfg.data, 16)
    images = calibration.sample(data, 16, int(cfg.seed), "int8")
    model = runtimes.load(art["format"], entry.out / art["path"], art["meta"], threads=1)
    seen = []
    inner = model.inner  # the runtime's own model behind the signature's adapter
    method = "predict_outputs" if hasattr(inner, "predict_outputs") else "predict"
    run_inner = getattr(inner, method)
    setattr(inner, method, lambda x: (seen.append(np.array(x)), run_inner(x))[1])
    runtimes.predict_all_outputs(model, images, 8)
    got = calibration.describe(np.concatenate(seen))
    assert got["shape"] == fed["shape"] and got["dtype"] == fed["dtype"]
    np.testing.assert_allclose(got["channel_mean"], fed["channel_mean"], atol=1e-4)
    np.testing.assert_allclose(got["channel_std"], fed["channel_std"], atol=1e-4)
    # and it is the model's own preprocessing, not the data set's normalisation (values around -120..150)
    assert fed["min"] < -90 and fed["max"] > 100
