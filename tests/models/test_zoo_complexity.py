"""The zoo's parameter and MAC counts match the published figures at 224x224 with 1000 classes, as the project's own
counter reports them; and a structurally edited network (pruned widths, folded batch norms) rebuilds from its spec."""
from __future__ import annotations

import pytest
import torch

from pipeline import models
from pipeline.models.complexity import count

# name: (published MACs, published parameters, relative tolerance). Sources: MobileNetV2 paper Table 3 (300 M, 3.4 M;
# the reference implementation has 3.50 M), MobileNetV3 paper Table 3 (Large 219 M / 5.4 M, Small 56 M / 2.5 M),
# EfficientNet-Lite README (Lite0 407 M / 4.7 M: that count includes BN and activations, see complexity.py),
# SqueezeNet 1.1 release notes (0.35 G, 1.24 M), ResNet paper Table 1 (1.8 G, 11.7 M).
PUBLISHED = {
    "mobilenet_v2": (300e6, 3.5e6, 0.02),
    "mobilenet_v3_large": (219e6, 5.4e6, 0.02),
    "mobilenet_v3_small": (56e6, 2.5e6, 0.02),
    "efficientnet_lite0": (407e6, 4.7e6, 0.06),
    "squeezenet1_1": (350e6, 1.24e6, 0.02),
    "resnet18": (1.8e9, 11.7e6, 0.02),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_macs_and_parameters(name):
    macs, params, tol = PUBLISHED[name]
    got = count(models.build(name, 1000), (1, 3, 224, 224))
    assert abs(got["macs"] / macs - 1) <= tol, f"{name}: {got['macs'] / 1e6:.1f} M MACs, published {macs / 1e6:.0f} M"
    assert abs(got["parameters"] / params - 1) <= tol, f"{name}: {got['parameters'] / 1e6:.3f} M parameters"


def test_every_zoo_entry_has_a_model_config():
    from conftest import ROOT

    for name in models.ZOO:
        assert (ROOT / "conf" / "model" / f"{name}.yaml").exists(), name


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_small_inputs_and_width_knob(name):
    m = models.build(name, 10, width_mult=0.5).eval()
    with torch.inference_mode():
        assert m(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_resized_and_folded_spec_rebuilds_the_network(tmp_path):
    import torch_pruning as tp

    torch.manual_seed(0)
    model = models.build("mobilenet_v3_small", 10, width_mult=0.5).eval()
    x = torch.randn(4, 3, 32, 32)
    pruner = tp.pruner.MetaPruner(model, x[:1], importance=tp.importance.GroupMagnitudeImportance(p=1),
                                  pruning_ratio=0.5, ignored_layers=[model.classifier[-1]])
    pruner.step()
    model.eval()
    spec = {"name": "mobilenet_v3_small", "num_classes": 10, "kwargs": {"width_mult": 0.5}}
    spec["resized"] = models.resized_layers(model, models.build_from_spec(spec))
    assert spec["resized"]
    models.fold_batchnorm(model)
    spec["bn_folded"] = True
    path = models.save_torch(model, tmp_path, spec)
    loaded, _ = models.load_torch(path)
    with torch.inference_mode():
        assert torch.allclose(loaded(x), model(x), atol=1e-6)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in loaded.modules())
