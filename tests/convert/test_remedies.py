"""Remedies before failure: a model whose int8 with per-tensor weights misses parity's budget (its first convolution
mixes channels whose weights differ by 10^4, so one scale for the tensor rounds the small ones to zero) gets the
back end's ladder: per-channel weights bring it within budget, and each attempt is reported. With remedies off the
same model fails parity, naming what was tried and the first diverging layer."""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from conftest import compose_cfg
from pipeline.core.errors import StageError


class Disparate(torch.nn.Module):
    """conv1's channels 0-3 copy one input pixel (one weight of 1.0); channels 4-7 average a 7x7 window (147 weights
    of about 0.003). Both give activations of the same size, but one weight scale for the whole tensor (1/127)
    rounds every weight of channels 4-7 to zero, and half the output goes with them. One scale per channel keeps
    them."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv1 = torch.nn.Conv2d(3, 8, 7, padding=3)
        self.conv2 = torch.nn.Conv2d(8, 8, 1)
        with torch.no_grad():
            w = torch.zeros(8, 3, 7, 7)
            for c in range(4):
                w[c, c % 3, 3, 3] = 1.0
            w[4:] = 0.003 + 0.001 * torch.rand(4, 3, 7, 7, generator=g)
            self.conv1.weight.copy_(w)
            self.conv1.bias.copy_(torch.tensor([0.0] * 4 + [0.6] * 4))
            self.conv2.weight.copy_(torch.eye(8).view(8, 8, 1, 1))
            self.conv2.bias.copy_(torch.tensor([0.0] * 4 + [-0.3] * 4))

    def forward(self, x):
        y = self.conv2(torch.relu(self.conv1(x)))
        return torch.flatten(torch.nn.functional.adaptive_avg_pool2d(y, 4), 1)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    d = tmp_path_factory.mktemp("disparate")
    path = d / "disparate.pt2"
    batch = torch.export.Dim("batch", min=1, max=1024)
    torch.export.save(torch.export.export(Disparate().eval(), (torch.zeros(2, 3, 16, 16),),
                                          dynamic_shapes=({0: batch},)), str(path))
    return path


ROUTES = {"onnx": {"export": {"type": "export_onnx", "inputs": ["mine"]},
                   "int8": {"type": "quantize_onnx", "inputs": ["export"], "per_channel": False}},
          "tflite": {"int8": {"type": "export_tflite", "inputs": ["mine"], "precision": "int8",
                              "per_channel": False}},
          "executorch": {"export": {"type": "export_executorch", "inputs": ["mine"]},
                         "int8": {"type": "quantize_executorch", "inputs": ["export"], "per_channel": False}}}


def _run(tmp_path, checkpoint, route: dict, **int8):
    from pipeline.app import run

    cfg = compose_cfg(["recipe=tiny_int8", "tracking=none", "device=host", "model.input_size=16", "task=none"],
                      tmp_path / "outputs")
    stages = {"mine": {"type": "import_model", "path": str(checkpoint)}, **route, "parity": {"type": "parity"}}
    stages["int8"] = {**stages["int8"], "calibration_samples": 32, "remedy_samples": 32, **int8}
    cfg.stages = OmegaConf.create(stages)
    return run(cfg).to_dict()


@pytest.mark.parametrize("backend", list(ROUTES))
@pytest.mark.slow
def test_per_channel_remedy_brings_int8_within_budget(tmp_path, checkpoint, backend):
    s = _run(tmp_path, checkpoint, ROUTES[backend])
    rows = {a["name"]: a for a in s["artifacts"]}
    info = next(st for st in s["stages"] if st["name"] == "int8")
    assert info["metrics"]["within_budget"] == 1.0
    from pipeline.core.cache import Cache

    rem = Cache(tmp_path / "outputs" / "cache").lookup(info["cache_key"]).manifest["artifact"]["meta"]["remedies"]
    tried = [a["name"] for a in rem["attempts"]]
    assert tried[:2] == ["as configured", "per-channel weights"] and rem["chosen"] == "per-channel weights"
    assert not rem["attempts"][0]["passed"] and rem["attempts"][1]["passed"]
    assert rows["int8"]["parity"]["ok"] and rows["int8"]["verdict"]["status"] == "pass"


def test_without_remedies_parity_fails_naming_what_was_tried_and_where(tmp_path, checkpoint):
    with pytest.raises(StageError) as e:
        _run(tmp_path, checkpoint, ROUTES["onnx"], remedies=False)
    msg = str(e.value)
    assert "diverged from its source 'export'" in msg and "min_snr_db 20" in msg
    assert "Tried at 'int8': as configured" in msg and "first diverging layer: " in msg


class Unbalanced(torch.nn.Module):
    """conv1's channels 0-3 are 10^4 times larger than 4-7, and conv2 scales them back: one int8 scale for the
    activation tensor between them cannot hold both, whatever the weights or the calibration do."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(8, 8, 1)
        with torch.no_grad():
            s = torch.tensor([100.0] * 4 + [0.01] * 4)
            self.conv1.weight.mul_(s.view(-1, 1, 1, 1))
            self.conv1.bias.mul_(s)
            self.conv2.weight.div_(s.view(1, -1, 1, 1))

    def forward(self, x):
        y = self.conv2(torch.relu(self.conv1(x)))
        return torch.flatten(torch.nn.functional.adaptive_avg_pool2d(torch.relu(y), 1), 1)


def test_when_no_remedy_helps_parity_names_every_attempt_and_the_first_diverging_layer(tmp_path):
    path = tmp_path / "unbalanced.pt2"
    batch = torch.export.Dim("batch", min=1, max=1024)
    torch.export.save(torch.export.export(Unbalanced().eval(), (torch.zeros(2, 3, 16, 16),),
                                          dynamic_shapes=({0: batch},)), str(path))
    with pytest.raises(StageError) as e:
        _run(tmp_path, path, ROUTES["onnx"])
    msg = str(e.value)
    assert "diverged from its source 'export'" in msg and "min_snr_db 20" in msg
    assert ("Tried at 'int8': as configured; per-channel weights; 4x the calibration images; entropy calibration; "
            "percentile calibration; float islands (the outputs' decoding in float); NNCF int8 (fast bias "
            "correction).") in msg
    assert "first diverging layer: " in msg


@pytest.mark.slow
def test_mixed_precision_remedies_make_files_that_run_and_agree(tmp_path):
    """The rungs that change precision: LiteRT 16x8 (ai-edge-quantizer's int16 activations) and ExecuTorch float
    islands (the first and last layers left in float by the XNNPACK quantizer) give runnable files close to the
    PyTorch model."""
    import numpy as np

    from pipeline import runtimes
    from pipeline.convert import executorch, remedies, tflite_int8

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3),
                                torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(8, 4)).eval()
    x = np.random.default_rng(0).standard_normal((24, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x[16:])).numpy()
    a16 = tmp_path / "a16w8.tflite"
    assert "16x8" in tflite_int8.convert_a16w8(model, x[:1], a16, x[:16])["quantizer"]
    floats = remedies.edge_modules(model)
    assert floats == ["0", "6"]  # the first convolution and the classifier
    pte = tmp_path / "islands.pte"
    facts = executorch.quantize_pte(model, (1, 3, 16, 16), x[:16], pte, float_modules=floats)
    assert facts["quantization"]["float_modules"] == floats
    for fmt, path in (("tflite", a16), ("executorch", pte)):
        got = runtimes.load(fmt, path, {"input_layout": "NCHW", "input_shape": [1, 3, 16, 16]}, threads=1).predict(
            x[16:])
        cos = (ref * got).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(got, axis=1)
        assert cos.mean() > 0.99, (path.name, cos)
