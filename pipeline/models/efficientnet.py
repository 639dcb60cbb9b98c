"""EfficientNet-B0/B4 (Tan & Le, 2019) and EfficientNetV2-S (Tan & Le, 2021), as torchvision defines them: MBConv
(and V2's fused MBConv) blocks with SiLU and squeeze-excite; B4 scales B0 by width 1.4 and depth 1.8.

At 1000 classes (parameters / multiply-accumulates at the native resolution; torchvision in brackets): B0 5.29 M /
0.39 G at 224 [5.29 M, 0.39 G], B4 19.34 M / 4.39 G at 380 [19.34 M, 4.39 G], V2-S 21.46 M / 8.37 G at 384
[21.46 M, 8.37 G]. Stochastic depth is a training-time regulariser and is left out (identity at inference).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from pipeline.models.mobilenet_v2 import make_divisible

# (expansion, kernel, stride, input channels, output channels, repeats)
B0 = [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3), (6, 5, 1, 80, 112, 3),
      (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1)]
# (fused, expansion, kernel, stride, input channels, output channels, repeats)
V2_S = [(True, 1, 3, 1, 24, 24, 2), (True, 4, 3, 2, 24, 48, 4), (True, 4, 3, 2, 48, 64, 4),
        (False, 4, 3, 2, 64, 128, 6), (False, 6, 3, 1, 128, 160, 9), (False, 6, 3, 2, 160, 256, 15)]


def conv_bn_act(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
                               nn.BatchNorm2d(cout, eps=1e-3)]
    return nn.Sequential(*layers, nn.SiLU(inplace=True)) if act else nn.Sequential(*layers)


class SqueezeExcitation(nn.Module):
    def __init__(self, channels: int, squeeze: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(channels, squeeze, 1), nn.Conv2d(squeeze, channels, 1)
        self.act = nn.SiLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc2(self.act(self.fc1(x.mean([2, 3], keepdim=True)))))


class MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expansion: int, fused: bool = False):
        super().__init__()
        mid = make_divisible(cin * expansion)
        self.residual = stride == 1 and cin == cout
        if fused:
            layers = ([conv_bn_act(cin, mid, kernel, stride), conv_bn_act(mid, cout, 1, act=False)] if mid != cin
                      else [conv_bn_act(cin, cout, kernel, stride)])
        else:
            layers = [conv_bn_act(cin, mid, 1)] if mid != cin else []
            layers += [conv_bn_act(mid, mid, kernel, stride, groups=mid), SqueezeExcitation(mid, max(1, cin // 4)),
                       conv_bn_act(mid, cout, 1, act=False)]
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x) + x if self.residual else self.block(x)


class EfficientNet(nn.Module):
    def __init__(self, settings: list, last_channel: int | None, num_classes: int, dropout: float, in_channels: int):
        super().__init__()
        cin = settings[0][4]
        features: list[nn.Module] = [conv_bn_act(in_channels, cin, 3, 2)]
        for fused, e, k, s, _, cout, n in settings:
            for i in range(n):
                features.append(MBConv(cin, cout, k, s if i == 0 else 1, e, fused))
                cin = cout
        last = last_channel or 4 * cin
        features.append(conv_bn_act(cin, last, 1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean([2, 3]))


def scaled(width: float, depth: float) -> list:
    return [(False, e, k, s, make_divisible(ci * width), make_divisible(co * width), int(math.ceil(n * depth)))
            for e, k, s, ci, co, n in B0]


class EfficientNetB0(EfficientNet):
    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.2, in_channels: int = 3):
        super().__init__(scaled(width_mult, 1.0), None, num_classes, dropout, in_channels)


class EfficientNetB4(EfficientNet):
    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.4, in_channels: int = 3):
        super().__init__(scaled(1.4 * width_mult, 1.8), None, num_classes, dropout, in_channels)


class EfficientNetV2S(EfficientNet):
    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.2, in_channels: int = 3):
        settings = [(f, e, k, s, make_divisible(ci * width_mult), make_divisible(co * width_mult), n)
                    for f, e, k, s, ci, co, n in V2_S]
        super().__init__(settings, 1280, num_classes, dropout, in_channels)
