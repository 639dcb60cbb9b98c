"""ConvNeXt-Tiny (Liu et al., 2022), as torchvision defines it: 7x7 depthwise convolution, LayerNorm, an inverted
4x MLP with GELU, layer scale; LayerNorm + 2x2 stride-2 convolution between stages.

At 224x224 and 1000 classes: 28.59 M parameters / 4.46 G multiply-accumulates (torchvision: 28.59 M, 4.46 G).
Stochastic depth is a training-time regulariser and is left out (identity at inference).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

STAGES = [(96, 3), (192, 3), (384, 9), (768, 3)]


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps).permute(0, 3, 1, 2)


class CNBlock(nn.Module):
    def __init__(self, dim: int, layer_scale: float = 1e-6):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.layer_scale = nn.Parameter(torch.ones(dim, 1, 1) * layer_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.mlp(self.norm(self.dwconv(x).permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
        return x + self.layer_scale * y


class ConvNeXtTiny(nn.Module):
    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.0, in_channels: int = 3):
        super().__init__()
        dims = [max(8, int(round(d * width_mult))) for d, _ in STAGES]
        layers: list[nn.Module] = [nn.Conv2d(in_channels, dims[0], 4, 4), LayerNorm2d(dims[0], eps=1e-6)]
        for i, (d, (_, n)) in enumerate(zip(dims, STAGES)):
            layers += [CNBlock(d) for _ in range(n)]
            if i < len(dims) - 1:
                layers += [LayerNorm2d(d, eps=1e-6), nn.Conv2d(d, dims[i + 1], 2, 2)]
        self.features = nn.Sequential(*layers)
        self.norm = LayerNorm2d(dims[-1], eps=1e-6)
        self.dropout = nn.Dropout(dropout)  # not in the paper (0 by default)
        self.classifier = nn.Linear(dims[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(F.adaptive_avg_pool2d(self.features(x), 1))
        return self.classifier(self.dropout(torch.flatten(x, 1)))
