"""A one-channel NHWC segmentation head (a sigmoid foreground map [N, H, W, 1], the usual binary segmenter and edge
model layout) is read as two classes, not as "H classes": it passes the plan, is evaluated (mIoU), quantized and
held to parity by pixel agreement."""
from __future__ import annotations

import numpy as np
import torch
from omegaconf import OmegaConf
from PIL import Image

from conftest import compose_cfg


class BinaryNHWC(torch.nn.Module):
    """Foreground = pixels whose red channel is bright: sigmoid(20 * red), returned NHWC with one channel."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 1, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([20.0, 0.0, 0.0]).view(1, 3, 1, 1))
            self.conv.bias.zero_()

    def forward(self, x):
        return torch.sigmoid(self.conv(x)).permute(0, 2, 3, 1)


def _masks(root, n=40, size=16):
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        img = rng.integers(0, 100, (size, size, 3), dtype=np.uint8)
        y, x = rng.integers(0, size - 6, 2)
        img[y : y + 6, x : x + 6, 0] = 230  # a bright red square: the foreground
        Image.fromarray(img).save(root / "images" / f"{i}.png")
        Image.fromarray((img[..., 0] > 128).astype(np.uint8)).save(root / "masks" / f"{i}.png")
    return root


def test_one_channel_nhwc_head_is_a_binary_segmenter(tmp_path):
    from pipeline.app import run

    folder = _masks(tmp_path / "fg")
    path = tmp_path / "binary.onnx"
    torch.onnx.export(BinaryNHWC().eval(), (torch.zeros(2, 3, 16, 16),), str(path), input_names=["input"],
                      output_names=["foreground"], dynamo=True,
                      dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=64)},)).save(str(path))
    cfg = compose_cfg(["recipe=tiny_int8", "tracking=none", "device=jetson_orin_nano", "model.input_size=16",
                       "task=segmentation", "data=masks", f"data.path={folder}", "data.classes=[background,red]"],
                      tmp_path / "outputs")
    cfg.stages = OmegaConf.create({
        "mine": {"type": "import_model", "path": str(path)},
        "quantize": {"type": "quantize", "inputs": ["mine"], "calibration_samples": 16},
        "parity": {"type": "parity"},
        "evaluate": {"type": "evaluate"}})
    s = run(cfg).to_dict()
    rows = {a["name"]: a for a in s["artifacts"]}
    assert rows["mine"]["accuracy"] > 0.95  # mIoU of the foreground map against the masks
    assert rows["quantize"]["parity"]["pixel_agreement"] > 0.97 and rows["quantize"]["parity"]["ok"]
    assert abs(rows["quantize"]["accuracy"] - rows["mine"]["accuracy"]) < 0.03
