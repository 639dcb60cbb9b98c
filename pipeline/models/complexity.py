"""Parameters and multiply-accumulates (MACs) of a PyTorch model, counted by running it once on a zero input.

MACs count what the papers count: convolutions and fully connected layers (one MAC per weight per output position).
Batch norm, activations, pooling and element-wise adds are left out, as in the published MobileNet/ResNet figures;
they are < 1% of the total for these networks, except EfficientNet-Lite, whose published figure includes them.
"""
from __future__ import annotations

from typing import Any


def count(model, input_shape=(1, 3, 224, 224)) -> dict[str, Any]:
    """{'parameters': int, 'macs': int} for one image of `input_shape` (batch dimension ignored)."""
    import torch
    from torch import nn

    macs = 0

    def conv_hook(m: nn.Conv2d, inp, out):
        nonlocal macs
        k = m.weight.shape[1] * m.weight.shape[2] * m.weight.shape[3]  # in_channels/groups * kh * kw
        macs += int(out[0].numel()) * k

    def linear_hook(m: nn.Linear, inp, out):
        nonlocal macs
        macs += int(out[0].numel()) * m.in_features

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            model(torch.zeros(1, *input_shape[1:]))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    params = sum(p.numel() for p in model.parameters())
    return {"parameters": int(params), "macs": int(macs)}
