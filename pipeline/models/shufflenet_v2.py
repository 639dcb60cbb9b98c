"""ShuffleNetV2 x0.5 (Ma et al., 2018), as torchvision defines it (shufflenet_v2_x0_5, the variant Qualcomm AI Hub
publishes); `width_mult` scales its three stage widths (kept even: each unit splits its channels in two).

At 224x224 and 1000 classes: 1.37 M parameters / 41 M multiply-accumulates (torchvision: 1.37 M, 0.04 G).
"""
from __future__ import annotations

import torch
from torch import nn

X0_5 = [24, 48, 96, 192, 1024]


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class ShuffleUnit(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        half = cout // 2
        self.stride = stride
        if stride > 1:
            self.branch1 = nn.Sequential(nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin),
                                         nn.Conv2d(cin, half, 1, bias=False), nn.BatchNorm2d(half),
                                         nn.ReLU(inplace=True))
        else:
            self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(
            nn.Conv2d(cin if stride > 1 else half, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU(inplace=True),
            nn.Conv2d(half, half, 3, stride, 1, groups=half, bias=False), nn.BatchNorm2d(half),
            nn.Conv2d(half, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), 1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), 1)
        return channel_shuffle(out, 2)


class ShuffleNetV2X05(nn.Module):
    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.0, in_channels: int = 3):
        super().__init__()
        ch = [X0_5[0], *(max(4, 2 * int(round(c * width_mult / 2))) for c in X0_5[1:4]), X0_5[4]]
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, ch[0], 3, 2, 1, bias=False), nn.BatchNorm2d(ch[0]),
                                   nn.ReLU(inplace=True))
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin, stages = ch[0], []
        for repeats, cout in zip((4, 8, 4), ch[1:4]):
            stages.append(nn.Sequential(ShuffleUnit(cin, cout, 2), *(ShuffleUnit(cout, cout, 1)
                                                                      for _ in range(repeats - 1))))
            cin = cout
        self.stage2, self.stage3, self.stage4 = stages
        self.conv5 = nn.Sequential(nn.Conv2d(cin, ch[4], 1, bias=False), nn.BatchNorm2d(ch[4]), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(dropout)  # not in the paper (0 by default)
        self.fc = nn.Linear(ch[4], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage4(self.stage3(self.stage2(self.maxpool(self.conv1(x)))))
        return self.fc(self.dropout(self.conv5(x).mean([2, 3])))
