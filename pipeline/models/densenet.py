"""DenseNet-121 (Huang et al., 2017), as torchvision defines it (growth 32, blocks 6-12-24-16, bottleneck 4x,
compression 0.5). Pre-activation: every batch norm sits before its convolution, so no converter folds it away.

At 224x224 and 1000 classes: 7.98 M parameters / 2.83 G multiply-accumulates (torchvision: 7.98 M, 2.83 G).
"""
from __future__ import annotations

import torch
from torch import nn


class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int, bn_size: int = 4):
        super().__init__()
        self.body = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(inplace=True),
                                  nn.Conv2d(cin, bn_size * growth, 1, bias=False), nn.BatchNorm2d(bn_size * growth),
                                  nn.ReLU(inplace=True), nn.Conv2d(bn_size * growth, growth, 3, 1, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.body(x)], 1)


def transition(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.Conv2d(cin, cout, 1, bias=False),
                         nn.AvgPool2d(2, 2))


class DenseNet121(nn.Module):
    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.0, in_channels: int = 3):
        super().__init__()
        growth = max(4, int(round(32 * width_mult)))
        c = 2 * growth
        layers: list[nn.Module] = [nn.Conv2d(in_channels, c, 7, 2, 3, bias=False), nn.BatchNorm2d(c),
                                   nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)]
        for i, n in enumerate((6, 12, 24, 16)):
            for _ in range(n):
                layers.append(DenseLayer(c, growth))
                c += growth
            if i < 3:
                layers.append(transition(c, c // 2))
                c //= 2
        layers += [nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)  # not in the paper (0 by default)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.features(x).mean([2, 3])))
