"""Bring your own model: each file kind enters the DAG as an artifact of its format and later stages apply to it."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import compose_cfg

NET = textwrap.dedent('''
    import torch
    from torch import nn

    class TinyNet(nn.Module):
        def __init__(self, num_classes: int = 10, width: int = 8):
            super().__init__()
            self.conv = nn.Conv2d(3, width, 3, padding=1, bias=False)
            self.bn = nn.BatchNorm2d(width)
            self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(2 * width)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(2 * width, num_classes)

        def forward(self, x):
            x = torch.relu(self.bn(self.conv(x)))
            x = torch.relu(self.bn2(self.conv2(x)))
            return self.fc(torch.flatten(self.pool(x), 1))
''')


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """The user's own model code, importable as `user_nets` (also by subprocesses, through PYTHONPATH)."""
    d = tmp_path / "usercode"
    d.mkdir()
    (d / "user_nets.py").write_text(NET)
    monkeypatch.syspath_prepend(str(d))
    monkeypatch.setenv("PYTHONPATH", str(d))
    import importlib

    import user_nets

    importlib.reload(user_nets)
    torch.manual_seed(0)
    return user_nets.TinyNet(width=8).eval()


def run_import(tmp_path, stage: dict, extra: dict | None = None):
    from pipeline.app import run

    cfg = compose_cfg(["recipe=tiny_int8", "tracking=none", "device=host", "model.input_size=16"],
                      tmp_path / "outputs")
    cfg.stages = OmegaConf.create({"mine": {"type": "import_model", **stage}, **(extra or {}),
                                   "evaluate": {"type": "evaluate", "max_samples": 64}})
    return run(cfg)


def _art(summary, name="mine"):
    return next(a for a in summary["artifacts"] if a["name"] == name)


def test_onnx_file(tmp_path, user_module):
    path = tmp_path / "net.onnx"
    torch.onnx.export(user_module, (torch.zeros(1, 3, 16, 16),), str(path), input_names=["input"], dynamo=True,
                      dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=64)},)).save(str(path))
    s = run_import(tmp_path, {"path": str(path)},
                   {"quantize": {"type": "quantize_onnx", "inputs": ["mine"], "calibration_samples": 16}})
    a = _art(s)
    assert (a["format"], a["precision"]) == ("onnx", "fp32") and a["accuracy"] is not None
    assert _art(s, "quantize")["precision"] == "int8"  # later stages apply to it


def test_torch_export_file(tmp_path, user_module):
    path = tmp_path / "net.pt2"
    ep = torch.export.export(user_module, (torch.zeros(2, 3, 16, 16),),
                             dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},))
    torch.export.save(ep, str(path))
    s = run_import(tmp_path, {"path": str(path)}, {"export": {"type": "export_onnx", "inputs": ["mine"]}})
    assert _art(s)["format"] == "torch" and _art(s)["accuracy"] is not None
    assert _art(s, "export")["accuracy"] == pytest.approx(_art(s)["accuracy"])


def test_torchscript_file(tmp_path, user_module):
    path = tmp_path / "net.ts"
    torch.jit.save(torch.jit.script(user_module), str(path))
    s = run_import(tmp_path, {"path": str(path)})
    assert _art(s)["format"] == "torch" and _art(s)["accuracy"] is not None


def test_target_class_with_state_dict_then_pruned(tmp_path, user_module):
    path = tmp_path / "weights.pt"
    torch.save(user_module.state_dict(), path)
    s = run_import(tmp_path, {"path": str(path), "_target_": "user_nets.TinyNet", "init": {"width": 8}},
                   {"prune": {"type": "prune", "inputs": ["mine"], "amount": 0.5, "epochs": 0, "threads": 1}})
    assert _art(s)["format"] == "torch"
    m = next(st for st in s["stages"] if st["name"] == "prune")["metrics"]
    assert m["parameters_after"] < 0.6 * m["parameters_before"]


def test_keras_file(tmp_path):
    import keras

    from pipeline import runtimes

    inp = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inp)
    out = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(x))
    path = tmp_path / "net.keras"
    keras.Model(inp, out).save(path)
    from pipeline.app import run

    cfg = compose_cfg(["recipe=tiny_int8", "tracking=none", "device=host", "model.input_size=16"],
                      tmp_path / "outputs")
    stages = {"mine": {"type": "import_model", "path": str(path)}}
    if "keras" in runtimes.RUNTIMES:
        stages["evaluate"] = {"type": "evaluate", "max_samples": 32}
    cfg.stages = OmegaConf.create(stages)
    s = run(cfg)
    assert _art(s)["format"] == "keras"
    assert Path(s["run_dir"], _art(s)["path"]).suffix == ".keras"


@pytest.mark.bad_input
def test_pickled_model_is_refused_before_running(tmp_path, user_module):
    from pipeline.errors import ConfigError

    path = tmp_path / "whole_model.pt"
    torch.save(user_module, path)  # a pickle: loading it would run code
    with pytest.raises(ConfigError, match="Pickles are not loaded"):
        run_import(tmp_path, {"path": str(path)})
    assert not (tmp_path / "outputs").exists()


@pytest.mark.bad_input
def test_missing_file_and_unknown_suffix(tmp_path):
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match="stages.mine: path: .* does not exist"):
        run_import(tmp_path, {"path": str(tmp_path / "nope.onnx")})
    (tmp_path / "model.bin").write_bytes(b"x")
    with pytest.raises(ConfigError, match="cannot tell the format"):
        run_import(tmp_path, {"path": str(tmp_path / "model.bin")})
    assert not (tmp_path / "outputs").exists()


def test_replacing_the_file_invalidates_the_cache(tmp_path, user_module):
    path = tmp_path / "net.ts"
    torch.jit.save(torch.jit.script(user_module), str(path))
    first = run_import(tmp_path, {"path": str(path)})
    again = run_import(tmp_path, {"path": str(path)})
    assert next(s for s in again["stages"] if s["name"] == "mine")["status"] == "reused"
    torch.jit.save(torch.jit.script(type(user_module)(width=4)), str(path))
    third = run_import(tmp_path, {"path": str(path)})
    assert next(s for s in third["stages"] if s["name"] == "mine")["status"] == "ran"
    assert first["stages"][0]["cache_key"] != third["stages"][0]["cache_key"]
