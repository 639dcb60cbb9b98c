"""The networks of the estimator's measured corpus, built here so that each measurement is profiled exactly the way
the pipeline profiles a PyTorch artifact (ONNX export, then per-layer MACs and bytes).

Two sources: the published CPU/GPU tables (MobileNetV1 at the TFLite hosted-models widths and resolutions,
MobileNetV2, EfficientNet-Lite0) and the Qualcomm AI Hub corpus, whose model ids map to zoo networks at the resolution
the corpus states (`CORPUS`). MobileNetV1 (Howard et al., 2017) is not in the model zoo, so it is defined here.
"""
from __future__ import annotations

from functools import lru_cache

V1_BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
# Qualcomm AI Hub model id -> (zoo network, input side). Ids and sides as in the corpus' aihub_models.csv; the AI Hub
# model code builds each from torchvision (e.g. `regnet` is regnet_x_3_2gf, `shufflenet_v2` is x0.5).
CORPUS = {"mobilenet_v2": ("mobilenet_v2", 224), "mobilenet_v3_large": ("mobilenet_v3_large", 224),
          "mobilenet_v3_small": ("mobilenet_v3_small", 224), "resnet18": ("resnet18", 224),
          "resnet50": ("resnet50", 224), "resnet101": ("resnet101", 224), "resnext50": ("resnext50_32x4d", 224),
          "resnext101": ("resnext101_32x8d", 224), "wideresnet50": ("wide_resnet50_2", 224),
          "shufflenet_v2": ("shufflenet_v2_x0_5", 224), "mnasnet05": ("mnasnet0_5", 224),
          "regnet": ("regnet_x_3_2gf", 224), "regnet_y_800mf": ("regnet_y_800mf", 224),
          "googlenet": ("googlenet", 224), "inception_v3": ("inception_v3", 224),
          "squeezenet1_1": ("squeezenet1_1", 224), "densenet121": ("densenet121", 224),
          "efficientnet_b0": ("efficientnet_b0", 224), "efficientnet_b4": ("efficientnet_b4", 380),
          "efficientnet_v2_s": ("efficientnet_v2_s", 384), "convnext_tiny": ("convnext_tiny", 224),
          "vit": ("vit_b_16", 224)}
# The published tables' networks (corpus/published.csv): (network, side) pairs to profile.
PUBLISHED = [*((f"mobilenet_v1_{w}", 224) for w in ("1.0", "0.75", "0.5", "0.25")),
             *((f"mobilenet_v1_1.0", r) for r in (192, 160, 128)), ("mobilenet_v2", 224),
             ("efficientnet_lite0", 224)]


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
    """'mobilenet_v1_1.0', 'mobilenet_v2_1.0', or a zoo name ('resnet50', 'efficientnet_lite0' ...) -> torch module
    with 1000 classes (random weights: only the graph matters)."""
    from pipeline import models

    if network.startswith("mobilenet_v1_"):
        return mobilenet_v1(float(network.rsplit("_", 1)[1]))
    if network.startswith("mobilenet_v2_"):
        from pipeline.models.mobilenet_v2 import MobileNetV2

        return MobileNetV2(num_classes=1000, width_mult=float(network.rsplit("_", 1)[1]))
    if network in models.ZOO:
        return models.build(network, 1000)
    raise ValueError(f"unknown network {network!r} (MobileNetV1/V2 widths or a zoo model)")


def key(network: str, resolution: int) -> str:
    """The name of a profile in the cache (pipeline/devices/corpus/profiles.json.gz)."""
    return f"{network}@{resolution}"


def all_keys() -> list[tuple[str, int]]:
    return sorted({*PUBLISHED, *CORPUS.values()})


def trace(network: str, resolution: int):
    """Profile `network` at `resolution` from its ONNX export (slow: seconds to a minute per network)."""
    import torch

    from pipeline.devices.profiler import profile_torch_module

    torch.manual_seed(0)
    return profile_torch_module(build(network), [1, 3, resolution, resolution],
                                f"{network} {resolution} (ONNX export)")


@lru_cache(maxsize=None)
def profile(network: str, resolution: int):
    """The profile of `network` at `resolution`, batch 1: from the cache file when it holds it, else traced."""
    from pipeline.devices.corpus import profiles

    cached = profiles.load().get(key(network, resolution))
    return cached if cached is not None else trace(network, resolution)
