"""ResNet-18/50/101 (He et al., 2016), ResNeXt-50 32x4d / 101 32x8d (Xie et al., 2017) and Wide ResNet-50-2
(Zagoruyko & Komodakis, 2016), as torchvision defines them.

At width 1.0, 224x224 and 1000 classes (parameters / multiply-accumulates; torchvision's published figures in
brackets): ResNet-18 11.69 M / 1.81 G [11.7 M, 1.81 G], ResNet-50 25.56 M / 4.09 G [25.6 M, 4.09 G], ResNet-101
44.55 M / 7.80 G [44.5 M, 7.80 G], ResNeXt-50 25.03 M / 4.23 G [25.0 M, 4.23 G], ResNeXt-101 88.79 M / 16.4 G
[88.8 M, 16.4 G], Wide ResNet-50-2 68.88 M / 11.4 G [68.9 M, 11.4 G].
"""
from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int, groups: int = 1, base_width: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                           if stride != 1 or cin != cout else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (grouped for ResNeXt) at the stride, 1x1 expand by 4 (torchvision's "ResNet V1.5")."""
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int, groups: int = 1, base_width: int = 64):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        cout = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                           if stride != 1 or cin != cout else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class ResNet(nn.Module):
    def __init__(self, block: type, depths: list[int], num_classes: int = 1000, width_mult: float = 1.0,
                 dropout: float = 0.0, in_channels: int = 3, groups: int = 1, base_width: int = 64):
        super().__init__()
        widths = [max(8, int(round(c * width_mult))) for c in (64, 128, 256, 512)]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin, stages = widths[0], []
        for i, (c, n) in enumerate(zip(widths, depths)):
            blocks = []
            for j in range(n):
                blocks.append(block(cin, c, 2 if (i > 0 and j == 0) else 1, groups, base_width))
                cin = c * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)  # not in the paper (0 by default); a knob for small datasets
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.dropout(torch.flatten(self.pool(x), 1)))


class ResNet18(ResNet):
    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.0, in_channels: int = 3):
        super().__init__(BasicBlock, [2, 2, 2, 2], num_classes, width_mult, dropout, in_channels)


class ResNet50(ResNet):
    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.0, in_channels: int = 3):
        super().__init__(Bottleneck, [3, 4, 6, 3], num_classes, width_mult, dropout, in_channels)


class ResNet101(ResNet):
    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.0, in_channels: int = 3):
        super().__init__(Bottleneck, [3, 4, 23, 3], num_classes, width_mult, dropout, in_channels)


class ResNeXt50(ResNet):
    """ResNeXt-50 32x4d."""

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.0, in_channels: int = 3):
        super().__init__(Bottleneck, [3, 4, 6, 3], num_classes, width_mult, dropout, in_channels, 32, 4)


class ResNeXt101(ResNet):
    """ResNeXt-101 32x8d."""

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.0, in_channels: int = 3):
        super().__init__(Bottleneck, [3, 4, 23, 3], num_classes, width_mult, dropout, in_channels, 32, 8)


class WideResNet50(ResNet):
    """Wide ResNet-50-2: the bottleneck's inner width doubled."""

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.0, in_channels: int = 3):
        super().__init__(Bottleneck, [3, 4, 6, 3], num_classes, width_mult, dropout, in_channels, 1, 128)
