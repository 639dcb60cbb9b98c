"""The networks of the published calibration figures, built here so that each figure is profiled exactly the way the
pipeline profiles a PyTorch artifact (ONNX export, then per-layer MACs and bytes).

MobileNetV1 (Howard et al., 2017) is not in the model zoo, so it is defined here: 3x3 stem, 13 depthwise-separable
blocks, global pool, classifier, with the width multiplier and resolution of the TFLite hosted models.
"""
from __future__ import annotations

from functools import lru_cache

V1_BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]


def mobilenet_v1(width: float = 1.0, num_classes: int = 1001):
    from torch import nn

    def cbr(cin, cout, k, s, groups=1):
        return [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU6()]

    c = max(8, int(32 * width))
    layers = cbr(3, c, 3, 2)
    for cout, s in V1_BLOCKS:
        cout = max(8, int(cout * width))
        layers += cbr(c, c, 3, s, groups=c) + cbr(c, cout, 1, 1)
        c = cout
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))


def build(network: str):
    """'mobilenet_v1_1.0', 'mobilenet_v2_1.0', 'efficientnet_lite0' -> torch module (random weights: only the graph
    matters)."""
    if network.startswith("mobilenet_v1_"):
        return mobilenet_v1(float(network.rsplit("_", 1)[1]))
    if network.startswith("mobilenet_v2_"):
        from pipeline.models.mobilenet_v2 import MobileNetV2

        return MobileNetV2(num_classes=1000, width_mult=float(network.rsplit("_", 1)[1]))
    if network == "efficientnet_lite0":
        from pipeline.models.efficientnet_lite import EfficientNetLite0

        return EfficientNetLite0(num_classes=1000)
    raise ValueError(f"unknown calibration network {network!r}")


@lru_cache(maxsize=None)
def profile(network: str, resolution: int):
    """The ONNX-export profile of `network` at `resolution` x `resolution`, batch 1 (cached per process)."""
    import torch

    from pipeline.devices.profiler import profile_torch_module

    torch.manual_seed(0)
    return profile_torch_module(build(network), [1, 3, resolution, resolution], f"{network} {resolution} (ONNX export)")
