"""GoogLeNet (Szegedy et al., 2015) and Inception-v3 (Szegedy et al., 2016), as torchvision defines them, without
the auxiliary classifiers (they only serve training and are not in deployed graphs).

At 1000 classes: GoogLeNet 6.62 M parameters / 1.50 G multiply-accumulates at 224x224 (torchvision: 6.62 M, 1.50 G);
Inception-v3 23.83 M parameters (torchvision: 27.16 M with the auxiliary classifier, 23.83 M without) and 5.71 G MACs
at its native 299x299 (torchvision: 5.71 G); Qualcomm AI Hub profiles it at 224x224.
torchvision's GoogLeNet has a 3x3 convolution where the paper's "5x5" branch is; kept, as the published weights use it.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class BasicConv2d(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel, stride: int = 1, padding=0):
        super().__init__(nn.Conv2d(cin, cout, kernel, stride, padding, bias=False), nn.BatchNorm2d(cout, eps=0.001),
                         nn.ReLU(inplace=True))


class Inception(nn.Module):
    def __init__(self, cin: int, c1: int, c3r: int, c3: int, c5r: int, c5: int, pool: int):
        super().__init__()
        self.b1 = BasicConv2d(cin, c1, 1)
        self.b2 = nn.Sequential(BasicConv2d(cin, c3r, 1), BasicConv2d(c3r, c3, 3, padding=1))
        self.b3 = nn.Sequential(BasicConv2d(cin, c5r, 1), BasicConv2d(c5r, c5, 3, padding=1))
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True), BasicConv2d(cin, pool, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)


GOOGLENET = [(192, 64, 96, 128, 16, 32, 32), (256, 128, 128, 192, 32, 96, 64), "pool",
             (480, 192, 96, 208, 16, 48, 64), (512, 160, 112, 224, 24, 64, 64), (512, 128, 128, 256, 24, 64, 64),
             (512, 112, 144, 288, 32, 64, 64), (528, 256, 160, 320, 32, 128, 128), "pool2",
             (832, 256, 160, 320, 32, 128, 128), (832, 384, 192, 384, 48, 128, 128)]


class GoogLeNet(nn.Module):
    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.2, in_channels: int = 3):
        super().__init__()
        w = lambda c: max(4, int(round(c * width_mult)))
        layers: list[nn.Module] = [BasicConv2d(in_channels, w(64), 7, 2, 3), nn.MaxPool2d(3, 2, ceil_mode=True),
                                   BasicConv2d(w(64), w(64), 1), BasicConv2d(w(64), w(192), 3, padding=1),
                                   nn.MaxPool2d(3, 2, ceil_mode=True)]
        for spec in GOOGLENET:
            if spec == "pool":
                layers.append(nn.MaxPool2d(3, 2, ceil_mode=True))
            elif spec == "pool2":
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
            else:
                layers.append(Inception(*(w(c) for c in spec)))
        self.features = nn.Sequential(*layers)
        cout = sum(w(c) for c in (384, 384, 128, 128))
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(cout, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1)))


class InceptionA(nn.Module):
    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.b1 = BasicConv2d(cin, 64, 1)
        self.b5 = nn.Sequential(BasicConv2d(cin, 48, 1), BasicConv2d(48, 64, 5, padding=2))
        self.b3 = nn.Sequential(BasicConv2d(cin, 64, 1), BasicConv2d(64, 96, 3, padding=1),
                                BasicConv2d(96, 96, 3, padding=1))
        self.bp = BasicConv2d(cin, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b5(x), self.b3(x), self.bp(F.avg_pool2d(x, 3, 1, 1))], 1)


class InceptionB(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.b3 = BasicConv2d(cin, 384, 3, 2)
        self.b3d = nn.Sequential(BasicConv2d(cin, 64, 1), BasicConv2d(64, 96, 3, padding=1), BasicConv2d(96, 96, 3, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b3(x), self.b3d(x), F.max_pool2d(x, 3, 2)], 1)


class InceptionC(nn.Module):
    def __init__(self, cin: int, c7: int):
        super().__init__()
        self.b1 = BasicConv2d(cin, 192, 1)
        self.b7 = nn.Sequential(BasicConv2d(cin, c7, 1), BasicConv2d(c7, c7, (1, 7), padding=(0, 3)),
                                BasicConv2d(c7, 192, (7, 1), padding=(3, 0)))
        self.b7d = nn.Sequential(BasicConv2d(cin, c7, 1), BasicConv2d(c7, c7, (7, 1), padding=(3, 0)),
                                 BasicConv2d(c7, c7, (1, 7), padding=(0, 3)), BasicConv2d(c7, c7, (7, 1), padding=(3, 0)),
                                 BasicConv2d(c7, 192, (1, 7), padding=(0, 3)))
        self.bp = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b7(x), self.b7d(x), self.bp(F.avg_pool2d(x, 3, 1, 1))], 1)


class InceptionD(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.b3 = nn.Sequential(BasicConv2d(cin, 192, 1), BasicConv2d(192, 320, 3, 2))
        self.b7 = nn.Sequential(BasicConv2d(cin, 192, 1), BasicConv2d(192, 192, (1, 7), padding=(0, 3)),
                                BasicConv2d(192, 192, (7, 1), padding=(3, 0)), BasicConv2d(192, 192, 3, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b3(x), self.b7(x), F.max_pool2d(x, 3, 2)], 1)


class InceptionE(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.b1 = BasicConv2d(cin, 320, 1)
        self.b3_1 = BasicConv2d(cin, 384, 1)
        self.b3_2a, self.b3_2b = BasicConv2d(384, 384, (1, 3), padding=(0, 1)), BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.b3d_1 = nn.Sequential(BasicConv2d(cin, 448, 1), BasicConv2d(448, 384, 3, padding=1))
        self.b3d_2a, self.b3d_2b = BasicConv2d(384, 384, (1, 3), padding=(0, 1)), BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.bp = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, d = self.b3_1(x), self.b3d_1(x)
        return torch.cat([self.b1(x), self.b3_2a(a), self.b3_2b(a), self.b3d_2a(d), self.b3d_2b(d),
                          self.bp(F.avg_pool2d(x, 3, 1, 1))], 1)


class InceptionV3(nn.Module):
    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.5, in_channels: int = 3):
        super().__init__()
        if width_mult != 1.0:
            raise ValueError("Inception-v3 has no width multiplier (its branch widths are fixed by the paper)")
        self.features = nn.Sequential(
            BasicConv2d(in_channels, 32, 3, 2), BasicConv2d(32, 32, 3), BasicConv2d(32, 64, 3, padding=1),
            nn.MaxPool2d(3, 2), BasicConv2d(64, 80, 1), BasicConv2d(80, 192, 3), nn.MaxPool2d(3, 2),
            InceptionA(192, 32), InceptionA(256, 64), InceptionA(288, 64), InceptionB(288),
            InceptionC(768, 128), InceptionC(768, 160), InceptionC(768, 160), InceptionC(768, 192),
            InceptionD(768), InceptionE(1280), InceptionE(2048))
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(2048, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1)))
