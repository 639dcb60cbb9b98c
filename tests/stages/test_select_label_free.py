"""device=host's measured choice on a label-free model (task none): no labels to score, so every int8 candidate is
held to the input model's outputs (cosine and SNR, the parity defaults of task none) instead of top-1."""
from __future__ import annotations

import pytest

import numpy as np
import torch
from omegaconf import OmegaConf

from conftest import compose_cfg


class Embedding(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(8, 16, 3, padding=1)

    def forward(self, x):
        x = torch.relu(self.conv2(torch.relu(self.conv(x))))
        return torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1)  # a 16-number embedding


@pytest.mark.slow
def test_measured_choice_on_a_label_free_model(tmp_path):
    from PIL import Image

    from pipeline.app import run

    folder = tmp_path / "frames"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(48):
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(folder / f"f{i}.png")
    torch.manual_seed(0)
    path = tmp_path / "embed.onnx"
    torch.onnx.export(Embedding().eval(), (torch.zeros(2, 3, 16, 16),), str(path), input_names=["input"],
                      output_names=["embedding"], dynamo=True,
                      dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=64)},)).save(str(path))
    cfg = compose_cfg(["recipe=tiny_int8", "tracking=none", "device=host", "model.input_size=16", "task=none",
                       "data=images", f"data.path={folder}"], tmp_path / "outputs")
    cfg.stages = OmegaConf.create({
        "mine": {"type": "import_model", "path": str(path)},
        "quantize": {"type": "quantize", "inputs": ["mine"], "calibration_samples": 16,
                     "candidates": ["ort_per_channel_u8", "openvino_int8", "openvino_int8_accuracy_control"],
                     "warmup": 1, "iterations": 5},
        "evaluate": {"type": "evaluate"}})
    s = run(cfg).to_dict()
    q = next(a for a in s["artifacts"] if a["name"] == "quantize")
    sel = q["selection"]
    assert q["precision"] == "int8" and "parity with the reference" in sel["judged_on"]
    rows = {c["name"]: c for c in sel["candidates"]}
    assert rows["ort_per_channel_u8"]["accuracy"] is None and rows["ort_per_channel_u8"]["fidelity"]["cosine"] > 0.9
    chosen = rows[sel["chosen"]]
    assert chosen["passed"] and chosen["fidelity"]["cosine"] >= 0.99 and chosen["fidelity"]["snr_db"] >= 20
    ac = next(n for n in sel["not_runnable"] if n["name"] == "openvino_int8_accuracy_control")
    assert "labelled images" in ac["reason"]
    assert q["accuracy"] is None and q["accuracy_na"]  # no labels: n/a with the reason, not 0%
