"""MobileNetV3-Large and -Small (Howard et al., 2019), layer-for-layer the torchvision definition.

At width 1.0, 224x224 and 1000 classes: Large 5.48 M parameters / 217 M multiply-accumulates, Small 2.54 M / 57 M
(the paper's Table 3 says 5.4 M / 219 M and 2.5 M / 56 M).
"""
from __future__ import annotations

import torch
from torch import nn

from pipeline.models.mobilenet_v2 import init_weights

from pipeline.models.mobilenet_v2 import make_divisible


class ConvBNAct(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1, act: type | None = nn.ReLU):
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                                   nn.BatchNorm2d(cout)]
        if act is not None:
            layers.append(act(inplace=True))
        super().__init__(*layers)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, squeeze: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.gate = nn.Hardsigmoid(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.fc2(self.relu(self.fc1(self.pool(x)))))


class InvertedResidualV3(nn.Module):
    def __init__(self, cin: int, kernel: int, hidden: int, cout: int, se: bool, act: type, stride: int):
        super().__init__()
        self.use_residual = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if hidden != cin:
            layers.append(ConvBNAct(cin, hidden, 1, act=act))
        layers.append(ConvBNAct(hidden, hidden, kernel, stride, groups=hidden, act=act))
        if se:
            layers.append(SqueezeExcite(hidden, make_divisible(hidden // 4)))
        layers.append(ConvBNAct(hidden, cout, 1, act=None))
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.use_residual else self.block(x)


RE, HS = nn.ReLU, nn.Hardswish
# (kernel, expanded channels, output channels, squeeze-excite, activation, stride): Tables 1 and 2 of the paper.
LARGE = [(3, 16, 16, False, RE, 1), (3, 64, 24, False, RE, 2), (3, 72, 24, False, RE, 1), (5, 72, 40, True, RE, 2),
         (5, 120, 40, True, RE, 1), (5, 120, 40, True, RE, 1), (3, 240, 80, False, HS, 2), (3, 200, 80, False, HS, 1),
         (3, 184, 80, False, HS, 1), (3, 184, 80, False, HS, 1), (3, 480, 112, True, HS, 1),
         (3, 672, 112, True, HS, 1), (5, 672, 160, True, HS, 2), (5, 960, 160, True, HS, 1),
         (5, 960, 160, True, HS, 1)]
SMALL = [(3, 16, 16, True, RE, 2), (3, 72, 24, False, RE, 2), (3, 88, 24, False, RE, 1), (5, 96, 40, True, HS, 2),
         (5, 240, 40, True, HS, 1), (5, 240, 40, True, HS, 1), (5, 120, 48, True, HS, 1), (5, 144, 48, True, HS, 1),
         (5, 288, 96, True, HS, 2), (5, 576, 96, True, HS, 1), (5, 576, 96, True, HS, 1)]


class MobileNetV3(nn.Module):
    def __init__(self, settings: list, last_channel: int, num_classes: int = 1000, width_mult: float = 1.0,
                 dropout: float = 0.2, in_channels: int = 3):
        super().__init__()
        cin = make_divisible(16 * width_mult)
        features: list[nn.Module] = [ConvBNAct(in_channels, cin, 3, 2, act=HS)]
        for k, exp, cout, se, act, s in settings:
            exp, cout = make_divisible(exp * width_mult), make_divisible(cout * width_mult)
            features.append(InvertedResidualV3(cin, k, exp, cout, se, act, s))
            cin = cout
        last_conv = 6 * cin
        features.append(ConvBNAct(cin, last_conv, 1, act=HS))
        self.features = nn.Sequential(*features)
        self.pool = nn.AdaptiveAvgPool2d(1)
        last = make_divisible(last_channel * width_mult)
        self.classifier = nn.Sequential(nn.Linear(last_conv, last), nn.Hardswish(inplace=True),
                                        nn.Dropout(dropout), nn.Linear(last, num_classes))
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class MobileNetV3Large(MobileNetV3):
    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.2, in_channels: int = 3):
        super().__init__(LARGE, 1280, num_classes, width_mult, dropout, in_channels)


class MobileNetV3Small(MobileNetV3):
    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.2, in_channels: int = 3):
        super().__init__(SMALL, 1024, num_classes, width_mult, dropout, in_channels)
