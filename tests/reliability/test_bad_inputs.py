"""The bad-input catalogue: each entry asserts a message that names the problem and the fix, the exit status (2 before
any stage ran, 1 when a stage failed) and that nothing partial lands in the cache, outputs/ or MLflow.

Entries are marked `bad_input`; the terminal summary counts them. Composition errors go through the real command
line (Hydra); plan and run errors through `app.run` in-process, mapped to exit statuses as pipeline/cli/run.py does.
"""
from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from conftest import run_cli
from rel_helpers import (STUB_CONF, mounted_tmpfs, assert_nothing_partial, assert_nothing_written, compose_stub, mlflow_runs, outcome,
                         write_images)

pytestmark = pytest.mark.bad_input

SEARCH = f"hydra.searchpath=[file://{STUB_CONF}]"

# --- 1. the command line and config files (Hydra composition): exit 2, nothing written ---------------------------
CLI_CASES = {
    # name: (arguments, fragments the message must contain: the problem ... and the fix)
    "malformed YAML recipe": (["recipe=broken_yaml", SEARCH],
                              ["not valid YAML", "broken_yaml.yaml", "line", "Fix that file"]),
    "malformed override": (["recipe=tiny_int8", "stages.train.epochs=[1,"],
                           ["no viable alternative", "override_grammar"]),
    "unknown top-level key": (["recipe=tiny_int8", "trackin.uri=x"],
                              ["unknown key 'trackin'", "Did you mean 'tracking'"]),
    "unknown nested key": (["recipe=tiny_int8", "model.widht_mult=0.5"],
                           ["model.widht_mult", "Did you mean 'model.width_mult'"]),
    "wrong type": (["recipe=tiny_int8", "model.input_size=big"],
                   ["model.input_size: give one side (224) or [H, W] ([608, 800]), got 'big'"]),
    "unknown recipe": (["recipe=tiny_int9"], ["no recipe named 'tiny_int9'", "Did you mean 'tiny_int8'",
                                              "Recipes: benchmark, "]),
    "unknown device": (["recipe=tiny_int8", "device=pixl7"], ["no device named 'pixl7'", "Did you mean 'pixel7'",
                                                              "Devices: "]),
    "unknown data": (["recipe=tiny_int8", "data=digit"], ["no data set named 'digit'", "Did you mean 'digits'"]),
    "typo in a stage name": (["recipe=tiny_int8", "stages.quantise.calibration_samples=8"],
                             ["stages.quantise: the recipe has no stage 'quantise'", "Did you mean 'quantize'",
                              "stages.quantise.type=TYPE"]),
    "recipe without stages": (["recipe=no_stages", SEARCH], ["declares no stages", "add a `stages:` mapping"]),
    # an Optuna sweep whose search range Optuna cannot sample: refused before any job runs
    "sweep range upside down": (
        ["-m", "recipe=tiny_int8", "+sweep=quant_search", "stages.quantize.calibration_samples=range(64,8)"],
        ["stages.quantize.calibration_samples (a sweep on the command line): 'range(64,8)'", "low=64, high=8",
         "START <= STOP", "e.g. range(8,64)"]),
    "sweep interval upside down": (
        ["-m", "recipe=tiny_int8", "+sweep=quant_search", "gate.max_accuracy_drop=interval(1,0)"],
        ["gate.max_accuracy_drop (a sweep on the command line): 'interval(1,0)'", "LOW <= HIGH", "interval(0.0,1.0)"]),
    "sweep choice over nothing": (
        ["-m", "recipe=tiny_int8", "+sweep=quant_search", "stages.quantize.method=shuffle(range(3,1))"],
        ["stages.quantize.method (a sweep on the command line)", "one or more elements", "choice(A,B,...)"]),
    "sweep range under hydra.sweeper.params": (
        ["-m", "recipe=tiny_int8", "+sweep=quant_search",
         "hydra.sweeper.params.stages.quantize.calibration_samples=range(64,8)"],
        ["hydra.sweeper.params.stages.quantize.calibration_samples: a search range cannot be set",
         "Pass it as stages.quantize.calibration_samples=range(64,8)", "e.g. range(8,64)"]),
}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
@pytest.mark.slow
def test_command_line(case, tmp_path):
    args, fragments = CLI_CASES[case]
    out = run_cli(*args, f"paths.outputs={tmp_path / 'outputs'}", cwd=tmp_path)
    msg = out.stdout + out.stderr
    assert out.returncode == 2, msg
    assert "Traceback" not in msg, msg
    for frag in fragments:
        assert frag in msg, f"{frag!r} missing from:\n{msg}"
    assert "search path" not in msg.lower() and "Available options" not in msg  # Hydra's own listing is replaced
    assert_nothing_written(tmp_path)


def test_sweep_config_with_invalid_ranges_names_each(tmp_path):
    """A sweep config (conf/sweep/*.yaml) with a range upside down and an empty choice: both named, no job runs."""
    (tmp_path / "conf" / "sweep").mkdir(parents=True)
    (tmp_path / "conf" / "sweep" / "bad_search.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /hydra/sweeper: optuna\n"
        "hydra:\n  sweeper:\n    n_trials: 2\n    params:\n"
        "      stages.quantize.calibration_samples: range(64,8)\n"
        "      stages.quantize.method: choice()\n"
        "      stages.quantize.per_channel: choice(true, false)\n")
    outputs = tmp_path / "outputs"
    out = run_cli("-m", "recipe=tiny_int8", "+sweep=bad_search", f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
                  f"paths.outputs={outputs}", cwd=tmp_path)
    msg = out.stdout + out.stderr
    assert out.returncode == 2, msg
    assert "Traceback" not in msg, msg
    assert "hydra.sweeper.params.stages.quantize.calibration_samples: 'range(64,8)'" in msg and "range(8,64)" in msg
    assert "hydra.sweeper.params.stages.quantize.method: 'choice()'" in msg and "empty choice is not legal" in msg
    assert "per_channel" not in msg  # the valid one is not blamed
    assert_nothing_written(outputs)


# --- 2. the plan: exit 2 before anything is written ----------------------------------------------------------------
def _folder(tmp: Path, layout: dict[str, int]) -> Path:
    root = tmp / "photos"
    root.mkdir(parents=True)
    for name, n in layout.items():
        (root / name).mkdir()
        if n:
            write_images(root, {name: n})
    return root


DATA = {  # data folders the plan cases point at (built per test under tmp_path)
    "empty": {},
    "one class": {"cat": 4},
    "class without images": {"cat": 4, "dog": 0},
    "class with one image": {"cat": 4, "dog": 1},
    "tiny": {"cat": 5, "dog": 5},
}

PLAN_CASES = {
    # name: (overrides, fragments: the full key path, the problem, the fix)
    "unknown stage type": (["stages.quantize.type=quantise_onnx"],
                           ["stages.quantize.type", "unknown stage type 'quantise_onnx'", "Did you mean 'quantize_onnx'"]),
    "stage type not a name": (["stages.quantize.type=[a,b]"], ["stages.quantize.type", "unknown stage type",
                                                               "Registered types:"]),
    "unknown stage parameter": (["stages.quantize.calibraton_samples=64"],
                                ["stages.quantize.calibraton_samples", "Did you mean 'calibration_samples'"]),
    "stage parameter of the wrong type": (["stages.train.epochs=many"], ["stages.train.epochs", "many"]),
    "stage that is not a mapping": (["stages.export=5"], ["stages.export", "expected a mapping"]),
    "unknown model": (["model.name=mobilenet_v9"], ["model.name", "unknown model", "Available:", "mobilenet_v2"]),
    "cycle": (["stages.export.inputs=[quantize]"], ["cycle", "export -> quantize -> export", "Remove one"]),
    "stage reading itself": (["stages.export.inputs=[export]"], ["cycle", "export -> export"]),
    "format mismatch": (["stages.quantize.inputs=[train]"],
                        ["takes onnx models", "produces a torch model", "Add an export stage"]),
    "unknown input": (["stages.quantize.inputs=[exprt]"], ["'exprt' is not a stage", "Did you mean 'export'"]),
    "calibration_samples = 0": (["stages.quantize.calibration_samples=0"], ["stages.quantize.calibration_samples", "must be an integer >= 1"]),
    "calibration_samples < 0": (["stages.quantize.calibration_samples=-5"], ["stages.quantize.calibration_samples", "must be an integer >= 1"]),
    "calibration_samples > training split (digits)": (
        ["stages.quantize.calibration_samples=5000"],
        ["stages.quantize.calibration_samples", "5000 is more than the 1438 images", "calibration_samples=1438 or less"]),
    "calibration_samples > training split (folder)": (
        ["data=imagefolder", "data.path={tiny}", "stages.quantize.calibration_samples=64"],
        ["64 is more than the 8 images of the training split", "calibration_samples=8 or less"]),
    "epochs = 0": (["stages.train.epochs=0"], ["stages.train.epochs", "must be an integer >= 1"]),
    "benchmark iterations = 0": (["stages.benchmark.iterations=0"], ["stages.benchmark.iterations", "must be an integer >= 1"]),
    "imagefolder without a path": (["data=imagefolder"], ["data.path", "add data.path=DIR"]),
    "missing data folder": (["data=imagefolder", "data.path=/nonexistent/photos"],
                            ["data.path", "does not exist", "one sub-folder of images per class"]),
    "data path is a file": (["data=imagefolder", "data.path={file}"], ["data.path", "is not a folder"]),
    "empty data folder": (["data=imagefolder", "data.path={empty}"], ["has 0 class folder(s)", "at least 2"]),
    "a single class": (["data=imagefolder", "data.path={one class}"], ["has 1 class folder(s)", "at least 2"]),
    "class folder without images": (["data=imagefolder", "data.path={class without images}"],
                                    ["class folder(s) dog", "hold no images", "add images or remove the folder"]),
    "class folder with one image": (["data=imagefolder", "data.path={class with one image}"],
                                    ["dog", "only one image", "at least 2"]),
    "val_fraction out of range": (["data.val_fraction=1.5"], ["data.val_fraction", "between 0 and 1"]),
    "std of zero": (["data.std=[0.5,0,0.5]"], ["data.std", "must be > 0"]),
    "mean with two values": (["data.mean=[0.5,0.5]"], ["data.mean", "needs 3 finite numbers"]),
    "input size of zero": (["model.input_size=0"], ["model.input_size", "sides must be positive whole numbers"]),
    "force an unknown stage": (["cache.force=[quantise]"], ["cache.force", "'quantise' is not a stage"]),
    "interpolation to nowhere": (["description=${nowhere.at.all}"], ["does not resolve", "nowhere"]),
    "device name escaping outputs/": (["device.name=../../etc"], ["device.name", "cannot be used as a file name"]),
    "negative free-space minimum": (["paths.min_free_mb=-1"], ["paths.min_free_mb", "must be an integer >= 0"]),
}


@pytest.mark.parametrize("case", sorted(PLAN_CASES))
@pytest.mark.slow
def test_plan(case, tmp_path):
    overrides, fragments = PLAN_CASES[case]
    (tmp_path / "a_file.txt").write_text("not a folder")
    paths = {"file": str(tmp_path / "a_file.txt")}
    for token in {o.split("{")[1].split("}")[0] for o in overrides if "{" in o and "${" not in o} - {"file"}:
        paths[token] = str(_folder(tmp_path / token.replace(" ", "_"), DATA[token]))
    overrides = [o.format(**paths) if "{" in o and "${" not in o else o for o in overrides]
    outputs = tmp_path / "outputs"
    cfg = compose_stub(outputs, "recipe=tiny_int8", *overrides)
    code, msg, _ = outcome(cfg)
    assert code == 2, msg
    for frag in fragments:
        assert frag in msg, f"{frag!r} missing from:\n{msg}"
    assert_nothing_written(outputs)


def test_stage_name_escaping_the_run_folder(tmp_path):
    code, msg, _ = outcome(compose_stub(tmp_path / "outputs", "recipe=traversal"))
    assert code == 2 and "stages.../../escaped" in msg and "letters, digits, '_' and '-' only" in msg
    assert_nothing_written(tmp_path / "outputs")


def test_digits_split_size_known_at_plan_time_matches_the_data():
    """The plan's calibration bound comes from pipeline.data.DIGITS_PER_CLASS: it must match the real split."""
    from omegaconf import OmegaConf

    from pipeline import data

    cfg = OmegaConf.create({"name": "digits", "val_fraction": 0.2, "seed": 0, "mean": [0.5] * 3, "std": [0.5] * 3,
                            "max_per_class": None, "path": None})
    loaded = data.load(cfg, 8)
    assert data.split_sizes(cfg) == (len(loaded.train_y), len(loaded.val_y))


# --- 3. the environment: outputs, disk, MLflow -------------------------------------------------------------------
def test_outputs_folder_not_writable(tmp_path):
    with mounted_tmpfs(tmp_path / "ro", "ro,size=1m") as ro:  # read-only: refused even for root
        code, msg, _ = outcome(compose_stub(ro / "outputs", "recipe=stub_chain", "tracking=local"))
        assert code == 2, msg
        assert "paths.outputs: cannot write to" in msg and "Read-only file system" in msg
        assert "choose a writable folder with paths.outputs=DIR" in msg


def test_outputs_path_is_a_file(tmp_path):
    (tmp_path / "outputs").write_text("a file where the outputs folder should be")
    code, msg, _ = outcome(compose_stub(tmp_path / "outputs", "recipe=stub_chain", "tracking=local"))
    assert code == 2 and "paths.outputs" in msg and "paths.outputs=DIR" in msg
    assert (tmp_path / "outputs").read_text().startswith("a file")


def test_disk_full_before_any_stage(tmp_path):
    with mounted_tmpfs(tmp_path / "disk", "size=256k") as disk:
        with contextlib.suppress(OSError):  # fill it up
            with open(disk / "filler", "wb") as f:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
        cfg = compose_stub(disk / "outputs", "recipe=stub_chain", "tracking=none", "paths.min_free_mb=0")
        code, msg, _ = outcome(cfg)  # (the free-space minimum off: the write itself fails)
        assert code == 2, msg
        assert "No space left on device" in msg and "paths.outputs=DIR" in msg
        assert not (disk / "outputs" / "runs").exists() or list((disk / "outputs" / "runs").rglob("*")) == []


def test_disk_full_during_a_stage(tmp_path):
    """A stage's output does not fit: exit 1 saying the disk is full; the finished stage stays cached, nothing partial."""
    with mounted_tmpfs(tmp_path / "disk", "size=3m") as disk:
        outputs = disk / "outputs"
        cfg = compose_stub(outputs, "recipe=stub_chain", "tracking=local", "stages.a.seconds=0", "stages.b.seconds=0",
                           "paths.min_free_mb=0")  # (a run may start on this small disk: it fills during stage b)
        cfg.stages.b.factor = 40  # 512 KB x 40, capped at 4 MB: more than is left after the ~1 MB store and a
        code, msg, _ = outcome(cfg)
        assert code == 1, msg
        assert "stage 'b'" in msg and "No space left on device" in msg
        assert "is full: free space there or move paths.outputs to a bigger disk" in msg
        summary = assert_nothing_partial(outputs, failed="b")
        assert {s["name"]: s["status"] for s in summary["stages"]} == {"a": "ran", "b": "failed"}


def test_outputs_disk_below_the_free_space_minimum(tmp_path):
    """Less than paths.min_free_mb free (default 200 MB) on the outputs disk: refused before any work, naming the
    disk, the free and needed space and the fixes; a lower minimum lets the same run start."""
    import shutil

    with mounted_tmpfs(tmp_path / "small", "size=32m") as disk:
        outputs = disk / "outputs"
        code, msg, _ = outcome(compose_stub(outputs, "recipe=stub_chain", "tracking=local"))
        assert code == 2, msg
        assert f"the disk holding {str(outputs)!r} (mounted at {disk} from tmpfs (tmpfs))" in msg, msg
        free = shutil.disk_usage(disk).free / 1e6
        assert f"has {free:.0f} MB free, less than the 200 MB a run needs (paths.min_free_mb)" in msg, msg
        assert "paths.outputs=DIR" in msg and "lower paths.min_free_mb (0 turns the check off)" in msg
        assert_nothing_written(outputs)
        code, msg, _ = outcome(compose_stub(outputs, "recipe=stub_chain", "tracking=none", "paths.min_free_mb=1",
                                            *(f"stages.{s}.seconds=0" for s in "abcd")))
        assert code == 0, msg


class SilentServer:
    """Accepts TCP connections and never answers: an MLflow server that hangs."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.uri = f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def close(self):
        self.sock.close()


@pytest.fixture
def silent_server():
    s = SilentServer()
    yield s
    s.close()


@pytest.mark.slow
def test_mlflow_server_that_does_not_answer(tmp_path, silent_server):
    """Default timeout (10 s): refused within it, naming the URI and the two ways out; nothing written."""
    cfg = compose_stub(tmp_path / "outputs", "recipe=stub_chain", "tracking=server", f"tracking.uri={silent_server.uri}")
    assert cfg.tracking.timeout_s == 10
    t = time.perf_counter()
    code, msg, _ = outcome(cfg)
    elapsed = time.perf_counter() - t
    assert code == 2, msg
    assert silent_server.uri in msg and "did not answer within 10 s" in msg
    assert "tracking.fallback_to_local=true" in msg and "mlflow server" in msg
    assert elapsed < 10.0 + 1.5, f"took {elapsed:.1f} s"  # the health check is bounded by tracking.timeout_s
    assert_nothing_written(tmp_path / "outputs")


def test_mlflow_server_that_does_not_answer_falls_back_when_asked(tmp_path, silent_server, caplog):
    outputs = tmp_path / "outputs"
    cfg = compose_stub(outputs, "recipe=stub_chain", "tracking=server", f"tracking.uri={silent_server.uri}",
                       "tracking.timeout_s=1", "tracking.fallback_to_local=true", "stages.a.seconds=0",
                       "stages.b.seconds=0", "stages.c.seconds=0", "stages.d.seconds=0")
    with caplog.at_level("WARNING", logger="pipeline"):
        code, msg, summary = outcome(cfg)
    assert code == 0, msg
    assert summary["mlflow"]["tracking_uri"] == f"sqlite:///{outputs / 'mlflow.db'}"
    assert any(silent_server.uri in r.getMessage() and "local store" in r.getMessage() for r in caplog.records)
    assert [r.info.status for r in mlflow_runs(outputs) if "mlflow.parentRunId" not in r.data.tags] == ["FINISHED"]


def test_corrupt_mlflow_store(tmp_path):
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    (outputs / "mlflow.db").write_bytes(b"this is not a database" * 100)
    code, msg, _ = outcome(compose_stub(outputs, "recipe=stub_chain", "tracking=local"))
    assert code == 2, msg
    assert str(outputs / 'mlflow.db') in msg and "tracking=none" in msg and "Move it away" in msg
    assert sorted(p.name for p in outputs.iterdir() if not p.name.endswith(".lock")) == ["mlflow.db"]


# --- 4. bad data and bad models found while running: exit 1, nothing partial --------------------------------------
@pytest.fixture
def photos(tmp_path) -> Path:
    return write_images(tmp_path / "photos", {"cat": 5, "dog": 5, "owl": 5})


def _real(outputs: Path, photos: Path, stages: dict, *overrides: str):
    cfg = compose_stub(outputs, "recipe=tiny_int8", "data=imagefolder", f"data.path={photos}", "model.input_size=16",
                       "tracking=local", *overrides)
    cfg.stages = OmegaConf.create(stages)
    return cfg


TRAIN = {"type": "train", "epochs": 1, "batch_size": 4, "augment": False}


def test_unreadable_image(tmp_path, photos):
    """Found by the plan-time header scan: exit 2 before any work (test_images.py lists several at once)."""
    (photos / "dog" / "003.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    outputs = tmp_path / "outputs"
    code, msg, _ = outcome(_real(outputs, photos, {"train": TRAIN}))
    assert code == 2, msg
    assert "dog/003.png: unreadable" in msg and "Remove or replace them" in msg
    assert_nothing_written(outputs)


def test_truncated_image(tmp_path, photos):
    f = photos / "owl" / "001.png"
    f.write_bytes(f.read_bytes()[:60])
    outputs = tmp_path / "outputs"
    code, msg, _ = outcome(_real(outputs, photos, {"train": TRAIN}))
    assert code == 2 and "owl/001.png: truncated" in msg and "Remove or replace them" in msg, msg
    assert_nothing_written(outputs)


def test_image_damaged_past_its_header_fails_naming_the_file(tmp_path, photos):
    """Intact header and end, damaged pixel data (only decoding finds it): exit 1 naming the file and both fixes."""
    f = photos / "owl" / "001.png"
    raw = bytearray(f.read_bytes())
    idat = raw.index(b"IDAT")
    raw[idat + 8 : idat + 30] = b"\xff" * 22
    f.write_bytes(bytes(raw))
    outputs = tmp_path / "outputs"
    code, msg, _ = outcome(_real(outputs, photos, {"train": TRAIN}))
    assert code == 1, msg
    assert f"cannot read image {f}" in msg and "Remove or replace the file" in msg and "data.on_bad_image=skip" in msg
    assert_nothing_partial(outputs, failed="train")


def test_training_loss_becomes_nan(tmp_path, photos):
    outputs = tmp_path / "outputs"
    code, msg, _ = outcome(_real(outputs, photos, {"train": {**TRAIN, "epochs": 3, "lr": 1e30}}))
    assert code == 1, msg
    assert "training loss became nan" in msg and "lower the learning rate" in msg
    assert_nothing_partial(outputs, failed="train")


def _tiny_onnx(path: Path, size: int) -> Path:
    """A valid ONNX classifier with a fixed spatial input size (global pool + linear), built without torch."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((3, 3), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["input"], ["p"]), helper.make_node("Flatten", ["p"], ["f"]),
         helper.make_node("MatMul", ["f", "w"], ["logits"])],
        "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def _byo(outputs, photos, src: Path, fmt: str, size: int = 16):
    return _real(outputs, photos, {"mine": {"type": "rel_file", "src": str(src), "format": fmt, "input_size": size},
                                   "evaluate": {"type": "evaluate"}})


@pytest.mark.parametrize("damage", ["truncated", "random bytes"])
@pytest.mark.slow
def test_corrupt_onnx(tmp_path, photos, damage):
    good = _tiny_onnx(tmp_path / "good.onnx", 16)
    bad = tmp_path / "model.onnx"
    data = good.read_bytes()
    bad.write_bytes(data[: len(data) // 2] if damage == "truncated" else np.random.default_rng(0).bytes(len(data)))
    outputs = tmp_path / "outputs"
    code, msg, _ = outcome(_byo(outputs, photos, bad, "onnx"))
    assert code == 1, msg
    assert "ONNX Runtime cannot load" in msg and "model.onnx" in msg and "supply a valid one" in msg
    assert_nothing_partial(outputs, failed="evaluate[mine]")


def _state_dict_model(folder: Path) -> Path:
    from pipeline import models

    spec = {"name": "mobilenet_v2", "num_classes": 3, "kwargs": {"width_mult": 0.35, "dropout": 0.0}}
    return models.save_torch(models.build("mobilenet_v2", 3, width_mult=0.35, dropout=0.0), folder, spec)


def test_truncated_pt_checkpoint(tmp_path, photos):
    pt = _state_dict_model(tmp_path / "mine")
    pt.write_bytes(pt.read_bytes()[:5000])
    outputs = tmp_path / "outputs"
    code, msg, _ = outcome(_byo(outputs, photos, pt, "torch"))
    assert code == 1, msg
    assert "cannot load PyTorch checkpoint" in msg and "truncated or corrupt" in msg and "state_dict" in msg
    assert_nothing_partial(outputs, failed="evaluate[mine]")


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['PAYLOAD_MARK']}",))


def test_pickled_pt_is_refused_and_never_run(tmp_path, photos, monkeypatch):
    """A .pt holding a pickled object (here: one that runs a shell command when unpickled) is refused unread."""
    import torch

    mark = tmp_path / "payload-ran"
    monkeypatch.setenv("PAYLOAD_MARK", str(mark))
    pt = _state_dict_model(tmp_path / "mine")
    torch.save({"weights": _Payload()}, pt)
    outputs = tmp_path / "outputs"
    code, msg, _ = outcome(_byo(outputs, photos, pt, "torch"))
    assert code == 1, msg
    assert "more than tensors" in msg and "unpickling can run code" in msg and "state_dict" in msg
    assert not mark.exists(), "the pickled payload ran"
    assert_nothing_partial(outputs, failed="evaluate[mine]")


def test_model_input_shape_does_not_match_the_data(tmp_path, photos):
    outputs = tmp_path / "outputs"
    onnx_file = _tiny_onnx(tmp_path / "model.onnx", 24)  # the data is resized to 16x16
    code, msg, _ = outcome(_byo(outputs, photos, onnx_file, "onnx", size=24))
    assert code == 1, msg
    assert "the model takes input Nx3x24x24 but the data is" in msg and "x3x16x16" in msg
    assert "set model.input_size" in msg
    assert_nothing_partial(outputs, failed="evaluate[mine]")
