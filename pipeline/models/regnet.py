"""RegNet (Radosavovic et al., 2020): RegNetX-3.2GF and RegNetY-800MF, as torchvision builds them from the
quantized-linear width rule (w_0, w_a, w_m, depth, group width; squeeze-excite for the Y models).

At 224x224 and 1000 classes: X-3.2GF 15.30 M parameters / 3.18 G multiply-accumulates, Y-800MF 6.43 M / 0.83 G
(torchvision: 15.30 M / 3.18 G and 6.43 M / 0.83 G). Qualcomm AI Hub's `regnet` is X-3.2GF.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from pipeline.models.mobilenet_v2 import make_divisible

# depth, w_0, w_a, w_m, group width, squeeze-excite ratio
X_3_2GF = (25, 88, 26.31, 2.25, 48, None)
Y_800MF = (14, 56, 38.84, 2.4, 16, 0.25)


def stages(depth: int, w_0: int, w_a: float, w_m: float, group_width: int) -> list[tuple[int, int, int]]:
    """(width, depth, group width) per stage, by the paper's rule (torchvision's BlockParams.from_init_params)."""
    widths = [round(w_0 * w_m ** round(math.log((i * w_a + w_0) / w_0) / math.log(w_m)) / 8) * 8
              for i in range(depth)]
    out: list[list[int]] = []
    for w in widths:
        if out and out[-1][0] == w:
            out[-1][1] += 1
        else:
            out.append([w, 1])
    result = []
    for w, d in out:
        g = min(group_width, w)
        result.append((make_divisible(w, g), d, g))
    return result


def conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
                               nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if act else nn.Sequential(*layers)


class SqueezeExcitation(nn.Module):
    def __init__(self, channels: int, squeeze: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(channels, squeeze, 1), nn.Conv2d(squeeze, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.fc2(torch.relu(self.fc1(x.mean([2, 3], keepdim=True))))
        return x * torch.sigmoid(s)


class ResBottleneck(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, group_width: int, se_ratio: float | None):
        super().__init__()
        self.proj = conv_bn(cin, cout, 1, stride, act=False) if cin != cout or stride != 1 else None
        layers = [conv_bn(cin, cout, 1), conv_bn(cout, cout, 3, stride, cout // group_width)]
        if se_ratio:
            layers.append(SqueezeExcitation(cout, int(round(se_ratio * cin))))
        self.f = nn.Sequential(*layers, conv_bn(cout, cout, 1, act=False))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu((x if self.proj is None else self.proj(x)) + self.f(x))


class RegNet(nn.Module):
    def __init__(self, design: tuple, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.0,
                 in_channels: int = 3):
        super().__init__()
        depth, w_0, w_a, w_m, gw, se = design
        self.stem = conv_bn(in_channels, 32, 3, 2)
        cin, trunk = 32, []
        for w, d, g in stages(depth, w_0 * width_mult, w_a * width_mult, w_m, gw):
            trunk.append(nn.Sequential(*(ResBottleneck(cin if i == 0 else w, w, 2 if i == 0 else 1, g, se)
                                         for i in range(d))))
            cin = w
        self.trunk = nn.Sequential(*trunk)
        self.dropout = nn.Dropout(dropout)  # not in the paper (0 by default)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.trunk(self.stem(x)).mean([2, 3])))


class RegNetX3_2GF(RegNet):
    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.0, in_channels: int = 3):
        super().__init__(X_3_2GF, num_classes, width_mult, dropout, in_channels)


class RegNetY800MF(RegNet):
    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.0, in_channels: int = 3):
        super().__init__(Y_800MF, num_classes, width_mult, dropout, in_channels)
