"""Bring your own model: each file kind enters the DAG as an artifact of its format and later stages apply to it."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import ROOT, compose_cfg

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
    return run(cfg).to_dict()


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
    s = run(cfg).to_dict()
    assert _art(s)["format"] == "keras"
    assert Path(s["run_dir"], _art(s)["path"]).suffix == ".keras"


@pytest.mark.bad_input
def test_pickled_model_is_refused_before_running(tmp_path, user_module):
    from pipeline.core.errors import ConfigError

    path = tmp_path / "whole_model.pt"
    torch.save(user_module, path)  # a pickle: loading it would run code
    with pytest.raises(ConfigError, match="Pickles are not loaded"):
        run_import(tmp_path, {"path": str(path)})
    assert not (tmp_path / "outputs").exists()


@pytest.mark.bad_input
def test_missing_file_and_unknown_suffix(tmp_path):
    from pipeline.core.errors import ConfigError

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


# --- models of every kind, built by the tests themselves ----------------------------------------------------------
class NhwcDetector(torch.nn.Module):
    """An NHWC-input, two-output detector head (heatmap [N, 10, h, w], boxes [N, 4, h, w]) at stride 8."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, 2, 1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, 2, 1),
                                        torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, 2, 1), torch.nn.ReLU())
        self.heat, self.box = torch.nn.Conv2d(8, 10, 1), torch.nn.Conv2d(8, 4, 1)

    def forward(self, x):  # x: NHWC
        f = self.body(x.permute(0, 3, 1, 2))
        return self.heat(f), torch.relu(self.box(f))


def test_nhwc_two_output_onnx_detector(tmp_path):
    from pipeline.app import run

    torch.manual_seed(0)
    path = tmp_path / "det_nhwc.onnx"
    torch.onnx.export(NhwcDetector().eval(), (torch.zeros(2, 32, 32, 3),), str(path), input_names=["image"],
                      output_names=["heatmap", "boxes"], dynamo=True,
                      dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=64)},)).save(str(path))
    cfg = compose_cfg(["recipe=tiny_int8", "tracking=none", "device=host", "model.input_size=32", "task=detection",
                       "data=digits_detection", "data.train_images=48", "data.val_images=16"], tmp_path / "outputs")
    cfg.stages = OmegaConf.create({
        "mine": {"type": "import_model", "path": str(path)},
        "quantize": {"type": "quantize_onnx", "inputs": ["mine"], "calibration_samples": 16},
        # (an untrained detector's peaks are ties that int8 noise reorders: the task's mAP agreement is not the
        # point here, each output's tensor metrics are)
        "parity": {"type": "parity", "samples": 16, "inputs": ["quantize"], "task_defaults": False},
        "evaluate": {"type": "evaluate"}})
    s = run(cfg).to_dict()
    par = _art(s, "quantize")["parity"]
    assert par["source"] == "mine" and list(par["outputs"]) == ["heatmap", "boxes"]  # each output, by name, in order
    assert all(v["cosine"] > 0.99 for v in par["outputs"].values())  # calibrated on NHWC images: int8 tracks fp32
    ev = next(st for st in s["stages"] if st["name"] == "evaluate[mine]")["metrics"]
    assert {"map50_95", "map50"} <= set(ev) and _art(s)["accuracy"] == ev["map50_95"]


@pytest.mark.slow
def test_float_and_int8_tflite_files(tmp_path, user_module):
    import numpy as np

    from pipeline.app import run
    from pipeline.convert import tflite_int8
    from pipeline.convert.tflite import convert_torch

    x = np.zeros((1, 3, 16, 16), np.float32)
    calib = np.random.default_rng(0).standard_normal((16, 3, 16, 16)).astype(np.float32)
    convert_torch(user_module, x, tmp_path / "net.tflite")
    facts = tflite_int8.convert(user_module, x, tmp_path / "net_int8.tflite", calib)
    assert facts["integer_only"]
    cfg = compose_cfg(["recipe=tiny_int8", "tracking=none", "device=host", "model.input_size=16"], tmp_path / "outputs")
    cfg.stages = OmegaConf.create({"fp": {"type": "import_model", "path": str(tmp_path / "net.tflite")},
                                   "q": {"type": "import_model", "path": str(tmp_path / "net_int8.tflite")},
                                   "evaluate": {"type": "evaluate", "max_samples": 64}})
    s = run(cfg).to_dict()
    fp, q = _art(s, "fp"), _art(s, "q")
    assert (fp["format"], fp["precision"], q["format"], q["precision"]) == ("tflite", "fp32", "tflite", "int8")
    assert fp["accuracy"] is not None and q["accuracy"] is not None


KERAS_LAYER = textwrap.dedent('''
    import keras

    @keras.saving.register_keras_serializable(package="user_layers")
    class ChannelScale(keras.layers.Layer):
        """A learnt per-channel scale: a layer Keras does not know."""

        def build(self, shape):
            self.scale = self.add_weight(shape=(shape[-1],), initializer="ones", name="scale")

        def call(self, x):
            return x * self.scale
''')


def test_keras_model_with_a_custom_layer(tmp_path, monkeypatch):
    import keras

    from pipeline.app import run

    d = tmp_path / "usercode"
    d.mkdir()
    (d / "user_layers.py").write_text(KERAS_LAYER)
    monkeypatch.syspath_prepend(str(d))
    monkeypatch.setenv("PYTHONPATH", str(d))
    import user_layers

    inp = keras.Input((16, 16, 3))
    x = user_layers.ChannelScale()(keras.layers.Conv2D(4, 3, activation="relu")(inp))
    path = tmp_path / "custom.keras"
    keras.Model(inp, keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(x))).save(path)
    cfg = compose_cfg(["recipe=tiny_int8", "tracking=none", "device=host", "model.input_size=16"], tmp_path / "outputs")
    cfg.stages = OmegaConf.create({"mine": {"type": "import_model", "path": str(path), "modules": ["user_layers"]},
                                   "evaluate": {"type": "evaluate", "max_samples": 32}})
    s = run(cfg).to_dict()
    assert _art(s)["format"] == "keras" and _art(s)["accuracy"] is not None


def _five_class_folder(root: Path, per_class: int = 24) -> Path:
    """Five classes a small network can tell apart: a square of the class's colour, anywhere, on noise."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    colours = [(230, 30, 30), (30, 230, 30), (30, 30, 230), (230, 230, 30), (30, 230, 230)]
    for c, colour in enumerate(colours):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            img = rng.integers(0, 60, (32, 32, 3), dtype=np.uint8)
            y, x = rng.integers(0, 16, 2)
            img[y : y + 16, x : x + 16] = colour
            Image.fromarray(img).save(root / f"class{c}" / f"{i}.png")
    return root


@pytest.fixture
def checkpoint_1000(tmp_path, user_module):
    import user_nets

    torch.manual_seed(0)
    path = tmp_path / "pretrained_1000.pt"
    torch.save(user_nets.TinyNet(num_classes=1000, width=8).state_dict(), path)
    return path


def test_1000_class_checkpoint_fine_tuned_on_a_5_class_folder(tmp_path, checkpoint_1000):
    """The fine-tune route end to end: the 1000-class import shows n/a (its head does not fit the data), never 0%;
    the re-headed model is not held to its 1000-class source; its int8 export is held to it, and passes."""
    from pipeline.app import run

    folder = _five_class_folder(tmp_path / "five")
    cfg = compose_cfg(["recipe=tiny_int8", "tracking=none", "device=host", "model.input_size=16", "data=imagefolder",
                       f"data.path={folder}"], tmp_path / "outputs")
    cfg.stages = OmegaConf.create({
        "mine": {"type": "import_model", "path": str(checkpoint_1000), "_target_": "user_nets.TinyNet",
                 "init": {"num_classes": 1000, "width": 8}},
        "finetune": {"type": "train", "inputs": ["mine"], "epochs": 8, "batch_size": 16, "lr": 0.02, "threads": 1},
        "export": {"type": "export_onnx", "inputs": ["finetune"]},
        "parity": {"type": "parity"},
        "evaluate": {"type": "evaluate"}})
    s = run(cfg).to_dict()
    ft = _art(s, "finetune")
    assert ft["accuracy"] > 0.5  # chance is 0.2 with five classes
    train = next(st for st in s["stages"] if st["name"] == "finetune")
    assert train["metrics"]["parameters"] < 2000  # a 5-class head, not the 1000-class one (16 * 1000 weights)
    mine = _art(s)
    assert mine["accuracy"] is None and "1000 classes but the data has 5" in mine["accuracy_na"]
    assert all(a["accuracy"] is None or a["accuracy"] > 0.2 for a in s["artifacts"])  # no 0% row
    assert "fine-tuned from 'mine' with a new head (1000 -> 5 classes)" in ft["parity"]["skipped"]
    assert _art(s, "export")["parity"]["source"] == "finetune" and _art(s, "export")["parity"]["ok"]
    from pipeline.report.schema import Summary
    from pipeline.report.table import summary_table

    assert "n/a" in summary_table(Summary.from_dict(s), color=False)


@pytest.mark.bad_input
def test_class_mismatch_is_refused_at_plan_time_naming_both_counts(tmp_path, checkpoint_1000):
    from conftest import run_cli

    folder = _five_class_folder(tmp_path / "five", per_class=4)
    stages = (f"{{mine:{{type:import_model,path:'{checkpoint_1000}',_target_:user_nets.TinyNet,"
              f"init:{{num_classes:1000,width:8}}}},evaluate:{{type:evaluate}}}}")
    out = run_cli("recipe=tiny_int8", "tracking=none", "device=host", "model.input_size=16", "data=imagefolder",
                  f"data.path={folder}", f"paths.outputs={tmp_path / 'outputs'}", f"stages={stages}",
                  env={"PYTHONPATH": f"{ROOT}:{checkpoint_1000.parent / 'usercode'}"})
    err = out.stdout + out.stderr
    assert out.returncode == 2, err[-2000:]
    assert "predicts 1000 classes but the data has 5" in err and "inputs: [mine]" in err, err[-2000:]
    assert not (tmp_path / "outputs" / "runs").exists()


def test_unlabelled_import_goes_through_quantize_parity_and_benchmark(tmp_path, user_module):
    import numpy as np
    from PIL import Image

    from pipeline.app import run

    folder = tmp_path / "frames"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(folder / f"f{i}.png")

    class Embedding(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = user_module

        def forward(self, x):
            m = self.m
            x = torch.relu(m.bn(m.conv(x)))
            x = torch.relu(m.bn2(m.conv2(x)))
            return torch.flatten(m.pool(x), 1)  # a 16-number embedding: no labels score it

    path = tmp_path / "embed.onnx"
    torch.onnx.export(Embedding().eval(), (torch.zeros(2, 3, 16, 16),), str(path), input_names=["input"],
                      output_names=["embedding"], dynamo=True,
                      dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=64)},)).save(str(path))
    cfg = compose_cfg(["recipe=tiny_int8", "tracking=none", "device=host", "model.input_size=16", "task=none",
                       "data=images", f"data.path={folder}"], tmp_path / "outputs")
    cfg.stages = OmegaConf.create({
        "mine": {"type": "import_model", "path": str(path)},
        "quantize": {"type": "quantize_onnx", "inputs": ["mine"], "calibration_samples": 16},
        "parity": {"type": "parity", "inputs": ["quantize"], "min_cosine": 0.95},
        "evaluate": {"type": "evaluate"},
        "benchmark": {"type": "benchmark", "inputs": ["mine", "quantize"], "warmup": 2, "iterations": 10}})
    s = run(cfg).to_dict()
    q = _art(s, "quantize")
    assert q["precision"] == "int8" and q["accuracy"] is None  # no labels, no task metric
    assert list(q["parity"]["outputs"]) == ["embedding"] and q["parity"]["cosine"] > 0.95
    assert q["latency_ms"]["p50"] > 0 and _art(s)["latency_ms"]["p50"] > 0
