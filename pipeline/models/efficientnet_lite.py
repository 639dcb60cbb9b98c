"""EfficientNet-Lite0 (Tan & Le 2019; the "lite" edge variant of the TensorFlow TPU repository): EfficientNet-B0's
MBConv stages without squeeze-excite, ReLU6 instead of swish, stem and head not scaled with the width.

At width 1.0, 224x224 and 1000 classes: 4.65 M parameters and 385 M multiply-accumulates (published: 4.7 M / 407 M;
the published count includes the batch-norm and activation arithmetic, which we do not count, see complexity.py).

`same_padding=True` pads the stride-2 convolutions the way TensorFlow's "SAME" does (one more pixel after than before),
which is how the published ImageNet weights were trained (pipeline/models/pretrained.py loads them); symmetric padding
would shift those layers' outputs by a pixel. The padding is fixed for inputs whose side is a multiple of 32 (every
stride-2 layer then sees an even size), where it equals TensorFlow's; at other sizes it is still valid, only not
TensorFlow's.
"""
from __future__ import annotations

import torch
from torch import nn

from pipeline.models.mobilenet_v2 import init_weights

from pipeline.models.mobilenet_v2 import make_divisible


class ConvBNReLU6(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1, act: bool = True,
                 same: bool = False):
        layers: list[nn.Module] = []
        pad = (kernel - 1) // 2
        if same and stride == 2:  # TensorFlow SAME on an even input: k - 2 pixels in all, the extra one after
            before = (kernel - 2) // 2
            layers.append(nn.ZeroPad2d((before, kernel - 2 - before, before, kernel - 2 - before)))
            pad = 0
        layers += [nn.Conv2d(cin, cout, kernel, stride, pad, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        if act:
            layers.append(nn.ReLU6(inplace=True))
        super().__init__(*layers)


class MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int, same: bool = False):
        super().__init__()
        hidden = cin * expand
        self.use_residual = stride == 1 and cin == cout
        layers: list[nn.Module] = [ConvBNReLU6(cin, hidden, 1)] if expand != 1 else []
        layers += [ConvBNReLU6(hidden, hidden, kernel, stride, groups=hidden, same=same),
                   ConvBNReLU6(hidden, cout, 1, act=False)]
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.use_residual else self.block(x)


# (expansion, kernel, output channels, repeats, first stride): EfficientNet-B0, Table 1 of the paper.
STAGES = [(1, 3, 16, 1, 1), (6, 3, 24, 2, 2), (6, 5, 40, 2, 2), (6, 3, 80, 3, 2), (6, 5, 112, 3, 1),
          (6, 5, 192, 4, 2), (6, 3, 320, 1, 1)]


class EfficientNetLite0(nn.Module):
    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.2, in_channels: int = 3,
                 same_padding: bool = False):
        super().__init__()
        cin = 32  # lite: the stem and head keep their width whatever the multiplier
        features: list[nn.Module] = [ConvBNReLU6(in_channels, cin, 3, 2, same=same_padding)]
        for t, k, c, n, s in STAGES:
            cout = make_divisible(c * width_mult)
            for i in range(n):
                features.append(MBConv(cin, cout, k, s if i == 0 else 1, t, same=same_padding))
                cin = cout
        features.append(ConvBNReLU6(cin, 1280, 1))
        self.features = nn.Sequential(*features)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(1280, num_classes))
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))
