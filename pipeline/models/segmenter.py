"""LR-ASPP (Lite Reduced Atrous Spatial Pyramid Pooling; Howard et al. 2019, "Searching for MobileNetV3", sec. 6.4)
on a MobileNetV3 backbone, as torchvision defines it: the last stage dilated for output stride 16; a 1x1 conv branch
gated by a global-average-pooled sigmoid branch; upsampled to stride 8 and added to a classifier of the stride-8
features; then upsampled to the input. Output: per-pixel logits [N, classes, H, W].
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models import _backbone


class LRASPP(nn.Module):
    output_names = ("logits",)

    def __init__(self, num_classes: int = 11, width_mult: float = 1.0, dropout: float = 0.0,
                 backbone: str = "mobilenet_v3_small", inter_channels: int = 128, in_channels: int = 3):
        super().__init__()
        feats, info, i8, i16 = _backbone.at_strides_8_and_16(backbone, width_mult)
        _backbone.dilate_after(feats, i16 + 1)
        self.low, self.high = feats[: i8 + 1], feats[i8 + 1 :]
        c_low, c_high = info[i8][1], info[-1][1]
        self.cbr = nn.Sequential(nn.Conv2d(c_high, inter_channels, 1, bias=False), nn.BatchNorm2d(inter_channels),
                                 nn.ReLU(inplace=True))
        self.scale = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c_high, inter_channels, 1), nn.Sigmoid())
        self.drop = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.low_classifier = nn.Conv2d(c_low, num_classes, 1)
        self.high_classifier = nn.Conv2d(inter_channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = self.low(x)
        high = self.high(low)
        a = self.cbr(high) * self.scale(high)
        a = F.interpolate(a, size=low.shape[-2:], mode="bilinear", align_corners=False)
        out = self.low_classifier(low) + self.high_classifier(self.drop(a))
        return F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
