"""An edge detector: an anchor-free, CenterNet-style head (Zhou et al. 2019, "Objects as Points") on a MobileNet.

The backbone's stride-16 features are upsampled and added to its stride-8 features (a two-level FPN), then two small
heads predict, per stride-8 cell, a heatmap logit per class (object centres) and the distances from the cell centre to
the box's left, top, right and bottom edges (in cells). Only convolutions, additions, ReLU and nearest upsampling:
every operator has an int8 kernel in TFLite and ONNX Runtime. Decoding (heatmap peaks -> boxes) and NMS run outside
the graph, in float, in pipeline.tasks.detection. Outputs: (heatmap [N, C, H/8, W/8], boxes [N, 4, H/8, W/8]).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models import _backbone

STRIDE = 8


def _cbr(cin: int, cout: int, k: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, 1, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class CenterNetLite(nn.Module):
    output_names = ("heatmap", "boxes")

    def __init__(self, num_classes: int = 10, width_mult: float = 0.5, dropout: float = 0.0,
                 backbone: str = "mobilenet_v2", head_channels: int = 64, in_channels: int = 3):
        super().__init__()
        feats, info, i8, i16 = _backbone.at_strides_8_and_16(backbone, width_mult)
        self.stage8, self.stage16 = feats[: i8 + 1], feats[i8 + 1 : i16 + 1]
        c8, c16 = info[i8][1], info[i16][1]
        self.lateral8, self.lateral16 = _cbr(c8, head_channels), _cbr(c16, head_channels)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.fuse = nn.Sequential(_cbr(head_channels, head_channels, 3, groups=head_channels),
                                  _cbr(head_channels, head_channels))
        self.drop = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.heatmap = nn.Sequential(_cbr(head_channels, head_channels, 3, groups=head_channels),
                                     nn.Conv2d(head_channels, num_classes, 1))
        self.box = nn.Sequential(_cbr(head_channels, head_channels, 3, groups=head_channels),
                                 nn.Conv2d(head_channels, 4, 1), nn.ReLU())
        nn.init.constant_(self.heatmap[-1].bias, -math.log((1 - 0.01) / 0.01))  # prior 0.01: CenterNet / RetinaNet

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f8 = self.stage8(x)
        f16 = self.stage16(f8)
        f = self.drop(self.fuse(self.lateral8(f8) + self.up(self.lateral16(f16))))
        return self.heatmap(f), self.box(f)

    @staticmethod
    def postprocess() -> dict:
        """How pipeline.tasks.detection turns this model's outputs into boxes (stored in the artifact's metadata)."""
        return {"kind": "centernet", "stride": STRIDE}


def encode_targets(labels, num_classes: int, stride: int, input_size: tuple[int, int]):
    """Ground truth of one batch on the stride grid: Gaussian heatmaps [B, C, h, w] peaking at 1 at box centres, the
    centre cells' distances to the box edges [B, 4, h, w] (in cells) and a mask of those cells [B, h, w]."""
    H, W = input_size
    h, w = H // stride, W // stride
    heat = np.zeros((len(labels), num_classes, h, w), np.float32)
    dist = np.zeros((len(labels), 4, h, w), np.float32)
    mask = np.zeros((len(labels), h, w), np.float32)
    ys, xs = np.mgrid[0:h, 0:w]
    for b, t in enumerate(labels):
        for (x1, y1, x2, y2), c in zip(np.asarray(t["boxes"]).reshape(-1, 4), np.asarray(t["labels"]).reshape(-1)):
            cx, cy = (x1 + x2) / 2 / stride, (y1 + y2) / 2 / stride
            j, i = min(int(cx), w - 1), min(int(cy), h - 1)
            sigma = max(0.5, max(x2 - x1, y2 - y1) / stride / 6)
            g = np.exp(-((xs - j) ** 2 + (ys - i) ** 2) / (2 * sigma ** 2))
            np.maximum(heat[b, c], g, out=heat[b, c])
            ccx, ccy = j + 0.5, i + 0.5
            dist[b, :, i, j] = [ccx - x1 / stride, ccy - y1 / stride, x2 / stride - ccx, y2 / stride - ccy]
            mask[b, i, j] = 1.0
    return torch.from_numpy(heat), torch.from_numpy(dist), torch.from_numpy(mask)


def centernet_loss(outputs, labels, stride: int, input_size: tuple[int, int]) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss on the heatmaps plus L1 on the centre cells' box distances."""
    heat_logits, dist_pred = outputs
    heat, dist, mask = encode_targets(labels, heat_logits.shape[1], stride, input_size)
    p = torch.sigmoid(heat_logits).clamp(1e-4, 1 - 1e-4)
    pos = heat.eq(1).float()
    pos_loss = torch.log(p) * (1 - p) ** 2 * pos
    neg_loss = torch.log(1 - p) * p ** 2 * (1 - heat) ** 4 * (1 - pos)
    n = pos.sum().clamp(min=1)
    focal = -(pos_loss.sum() + neg_loss.sum()) / n
    l1 = (F.l1_loss(dist_pred, dist, reduction="none").sum(1) * mask).sum() / mask.sum().clamp(min=1)
    return focal + l1
