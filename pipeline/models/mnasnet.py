"""MNASNet (Tan et al., 2019), the B1 search result as torchvision defines it; `MNASNet05` is
torchvision's mnasnet0_5 (depth multiplier 0.5), the variant Qualcomm AI Hub publishes, and `width_mult` scales it.

At 224x224 and 1000 classes: 0.5 has 2.22 M parameters / 104 M multiply-accumulates, 1.0 4.38 M / 312 M (torchvision:
2.22 M / 0.10 G and 4.38 M / 0.31 G).
"""
from __future__ import annotations

import torch
from torch import nn

DEPTHS = [32, 16, 24, 40, 80, 96, 192, 320]
# (kernel, stride, expansion, repeats) of the six stacks after the stem
STACKS = [(3, 2, 3, 3), (5, 2, 3, 3), (5, 2, 6, 3), (3, 1, 6, 2), (5, 2, 6, 4), (3, 1, 6, 1)]


def round_to_multiple(value: float, divisor: int = 8, round_up_bias: float = 0.9) -> int:
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return new if new >= round_up_bias * value else new + divisor


class MnasBlock(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expansion: int):
        super().__init__()
        mid = cin * expansion
        self.residual = cin == cout and stride == 1
        self.layers = nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, kernel, stride, kernel // 2, groups=mid, bias=False), nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True), nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x) + x if self.residual else self.layers(x)


class MNASNet(nn.Module):
    def __init__(self, alpha: float, num_classes: int = 1000, dropout: float = 0.2, in_channels: int = 3):
        super().__init__()
        d = [round_to_multiple(c * alpha) for c in DEPTHS]
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, d[0], 3, 2, 1, bias=False), nn.BatchNorm2d(d[0]), nn.ReLU(inplace=True),
            nn.Conv2d(d[0], d[0], 3, 1, 1, groups=d[0], bias=False), nn.BatchNorm2d(d[0]), nn.ReLU(inplace=True),
            nn.Conv2d(d[0], d[1], 1, bias=False), nn.BatchNorm2d(d[1])]
        cin = d[1]
        for cout, (k, s, e, n) in zip(d[2:], STACKS):
            layers += [MnasBlock(cin, cout, k, s, e), *(MnasBlock(cout, cout, k, 1, e) for _ in range(n - 1))]
            cin = cout
        layers += [nn.Conv2d(cin, 1280, 1, bias=False), nn.BatchNorm2d(1280), nn.ReLU(inplace=True)]
        self.layers = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(1280, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.layers(x).mean([2, 3]))


class MNASNet05(MNASNet):
    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.2, in_channels: int = 3):
        super().__init__(0.5 * width_mult, num_classes, dropout, in_channels)
