"""Non-square inputs (model.input_size: [H, W]) on every runtime: a model trained at 24 x 40 is exported to ONNX,
LiteRT, OpenVINO and ExecuTorch, each run on 24 x 40 images (evaluate, parity, int8); shapes a data set cannot make
are refused at plan time, and the letterbox maps boxes back to the original image."""
from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf

from conftest import compose_cfg
from pipeline.core.errors import ConfigError

H, W = 24, 40


@pytest.mark.slow
def test_non_square_model_on_every_runtime(tmp_path):
    from pipeline.app import run

    cfg = compose_cfg(["recipe=tiny_int8", "tracking=none", "device=host", f"model.input_size=[{H},{W}]"],
                      tmp_path / "outputs")
    cfg.stages = OmegaConf.create({
        "train": {"type": "train", "epochs": 2, "batch_size": 64},
        "onnx": {"type": "export_onnx", "inputs": ["train"]},
        "onnx_int8": {"type": "quantize_onnx", "inputs": ["onnx"], "calibration_samples": 32},
        "tflite_int8": {"type": "export_tflite", "inputs": ["train"], "precision": "int8", "calibration_samples": 32},
        "openvino": {"type": "export_openvino", "inputs": ["train"]},
        "executorch": {"type": "export_executorch", "inputs": ["train"]},
        "parity": {"type": "parity", "task_defaults": False, "min_cosine": 0.9},
        "evaluate": {"type": "evaluate"}})
    s = run(cfg).to_dict()
    rows = {a["name"]: a for a in s["artifacts"]}
    assert set(rows) == {"train", "onnx", "onnx_int8", "tflite_int8", "openvino", "executorch"}
    for name, r in rows.items():  # (two epochs from scratch: the point is that every runtime runs the shape)
        assert r["accuracy"] is not None, name
        if name != "train":
            assert r["parity"]["ok"], (name, r["parity"])
    for name in ("onnx", "openvino", "executorch"):  # float conversions score what the PyTorch model scores
        assert abs(rows[name]["accuracy"] - rows["train"]["accuracy"]) < 0.01, name
    from pipeline.core.cache import Cache

    cache = Cache(tmp_path / "outputs" / "cache")
    for st in s["stages"]:
        entry = cache.lookup(st["cache_key"])
        if entry and entry.manifest.get("artifact"):
            assert entry.manifest["artifact"]["meta"]["input_shape"][-2:] == [H, W], st["name"]


@pytest.mark.bad_input
def test_a_shape_the_data_cannot_make_is_refused_at_plan_time(tmp_path):
    from pipeline.core import plan

    cfg = compose_cfg(["recipe=detector_int8", "tracking=none", "model.input_size=[64,96]"], tmp_path / "outputs")
    with pytest.raises(ConfigError, match=r"composes square canvases, so \[64, 96\] is not supported"):
        plan.build_plan(cfg)
    cfg = compose_cfg(["recipe=tiny_int8", "tracking=none", "model.input_size=[0,32]"], tmp_path / "outputs")
    with pytest.raises(ConfigError, match="positive whole numbers"):
        plan.build_plan(cfg)


def test_letterbox_keeps_the_aspect_and_maps_boxes_back(tmp_path):
    from PIL import Image

    from pipeline.data._common import read_rgb, unletterbox
    from pipeline.data.detection import _placed

    img = np.zeros((60, 200, 3), np.uint8)
    img[10:30, 50:90] = 255  # a white box at x 50..90, y 10..30 of a 200 x 60 image
    Image.fromarray(img).save(tmp_path / "wide.png")
    x, wh = read_rgb(tmp_path / "wide.png", (H, W), "letterbox")
    assert x.shape == (3, H, W) and wh == (200, 60)
    boxes, params = _placed(np.array([[50, 10, 90, 30]]), wh, (H, W), "letterbox")
    s, px, py = params
    assert s == pytest.approx(0.2) and px == pytest.approx(0.0) and py == pytest.approx(6.0)  # 40 x 12, padded
    y0, y1, x0, x1 = (int(round(v)) for v in (boxes[0, 1], boxes[0, 3], boxes[0, 0], boxes[0, 2]))
    assert x[0, y0:y1, x0:x1].mean() > 0.9 and x[0, :5].max() < 0.5  # the box is where its pixels are; grey pad above
    np.testing.assert_allclose(unletterbox(boxes, params), [[50, 10, 90, 30]], atol=1e-4)
