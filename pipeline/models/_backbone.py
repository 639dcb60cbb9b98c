"""Backbones for the dense-prediction heads: the `features` of the zoo's MobileNets, cut at their stride-8 and
stride-16 outputs (found by running a small input through them, so any of the three MobileNets works)."""
from __future__ import annotations

import torch
from torch import nn

BACKBONES = ("mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large")


def features(name: str, width_mult: float) -> nn.Sequential:
    if name not in BACKBONES:
        raise ValueError(f"backbone {name!r} is not available; choose one of {', '.join(BACKBONES)}")
    if name == "mobilenet_v2":
        from pipeline.models.mobilenet_v2 import MobileNetV2 as cls
    elif name == "mobilenet_v3_small":
        from pipeline.models.mobilenet_v3 import MobileNetV3Small as cls
    else:
        from pipeline.models.mobilenet_v3 import MobileNetV3Large as cls
    return cls(num_classes=1, width_mult=width_mult).features


@torch.no_grad()
def strides(feats: nn.Sequential, size: int = 64) -> list[tuple[int, int]]:
    """(output stride, channels) after every layer of `feats`."""
    x = torch.zeros(1, 3, size, size)
    out = []
    was = feats.training
    feats.eval()
    for layer in feats:
        x = layer(x)
        out.append((size // x.shape[-1], x.shape[1]))
    feats.train(was)
    return out


def last_index(info: list[tuple[int, int]], stride: int) -> int:
    idx = [i for i, (s, _) in enumerate(info) if s == stride]
    if not idx:
        raise ValueError(f"the backbone has no stride-{stride} output")
    return idx[-1]


def dilate_after(feats: nn.Sequential, start: int) -> None:
    """Output stride 16 instead of 32, as DeepLab and LR-ASPP do: from layer `start` on, strided depthwise
    convolutions lose their stride and every depthwise convolution gets dilation 2 (same receptive field)."""
    for layer in list(feats)[start:]:
        for m in layer.modules():
            if isinstance(m, nn.Conv2d) and m.groups == m.in_channels and m.groups > 1:
                k = m.kernel_size[0]
                m.stride, m.dilation, m.padding = (1, 1), (2, 2), ((k - 1), (k - 1))


def at_strides_8_and_16(name: str, width_mult: float) -> tuple[nn.Sequential, list[tuple[int, int]], int, int]:
    """The backbone's features, each layer's (stride, channels), and the last layers at stride 8 and at stride 16:
    where a dense head (the detector's, the segmenter's) taps it."""
    feats = features(name, width_mult)
    info = strides(feats)
    return feats, info, last_index(info, 8), last_index(info, 16)

