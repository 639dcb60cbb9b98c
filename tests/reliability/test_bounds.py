"""Bounds on every number: each field's range lives in its type (pipeline.core.bounds), so a NaN, an infinity or a number
out of range is named with its full key path and the valid range before any work. Real composed configs."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import ROOT, compose_cfg
from pipeline.core import bounds, config
from pipeline.devices import catalog
from pipeline.stages import discover

pytestmark = pytest.mark.bad_input

CASES = {  # override: the message it must give
    "gate.max_accuracy_drop=nan": "gate.max_accuracy_drop: must be a finite number >= 0, got nan",
    "tracking.timeout_s=nan": "tracking.timeout_s: must be a finite number > 0, got nan",
    "model.width_mult=inf": "model.width_mult: must be a finite number > 0, got inf",
    "data.seed=-1": "data.seed: must be an integer in [0, 4294967295], got -1",
    "device.threads=-1": "device.threads: must be an integer >= 0 (0 = all cores), got -1",
    "seed=-3": "seed: must be an integer in [0, 4294967295], got -3",
    "gate.latency_ms=-5": "gate.latency_ms: must be a finite number > 0, got -5.0",
    "model.dropout=1.0": "model.dropout: must be a finite number in [0, 1), got 1.0",
    "data.val_fraction=nan": "data.val_fraction: must be a finite number in (0, 1), got nan",
    "data.mean=[0.5,nan,0.5]": "data.mean[1]: must be a finite number, got nan",
}


@pytest.mark.parametrize("override", sorted(CASES))
def test_a_number_out_of_range_is_named_with_its_path(override):
    cfg = compose_cfg(["recipe=tiny_int8", override])
    assert CASES[override] in config.problems(cfg)


def test_defaults_and_every_device_file_are_in_range():
    for device in sorted(p.stem for p in (ROOT / "conf" / "device").glob("*.yaml")):
        assert config.problems(compose_cfg(["recipe=tiny_int8", f"device={device}"])) == [], device


def test_zero_threads_still_means_all_cores():
    assert config.problems(compose_cfg(["recipe=tiny_int8", "device.threads=0"])) == []


def test_every_number_of_the_config_and_of_every_stage_declares_its_range():
    assert bounds.unbounded_numbers(config.PipelineConfig) == []
    registry = discover()
    registry = registry if isinstance(registry, dict) else registry[0]
    missing = {t: bounds.unbounded_numbers(c.Config) for t, c in registry.items()}
    assert {t: m for t, m in missing.items() if m} == {}


def test_stage_parameters_out_of_range():
    from pipeline.library.training import TrainConfig

    got = bounds.problems(TrainConfig(label_smoothing=2.0, lr=float("nan"), epochs=0), "stages.train")
    assert "stages.train.label_smoothing: must be a finite number in [0, 1), got 2.0" in got
    assert "stages.train.lr: must be a finite number > 0, got nan" in got
    assert "stages.train.epochs: must be an integer >= 1, got 0" in got


def test_device_file_holding_a_number_where_a_figure_belongs(tmp_path):
    """OmegaConf reports it with an empty key; the hint names the key, the file and the shape."""
    src = (ROOT / "conf" / "device" / "pixel7.yaml").read_text().splitlines()
    (tmp_path / "device").mkdir()
    (tmp_path / "device" / "mine.yaml").write_text(
        "\n".join("ram_gb: 8" if line.startswith("ram_gb:") else line for line in src))
    text = ("In 'device/mine': ValidationError raised while composing config:\nMerge error: int is not a subclass "
            "of FigureConfig. value: 8\n    full_key: \n    object_type=PipelineConfig")
    hint = catalog.merge_error_hint(text, [tmp_path])
    assert hint.startswith(f"device.ram_gb in {tmp_path / 'device' / 'mine.yaml'}: expects a mapping of FigureConfig")
    assert "{value: 8, source:" in hint
    assert catalog.merge_error_hint("some other error") is None


CHOICES = {  # a closed set of values: named with its path and every value it may take, at plan time
    "stages.quantize.method=avg": "stages.quantize.method: must be one of minmax, entropy, percentile, got 'avg'",
    "stages.quantize.activation_type=int4":
        "stages.quantize.activation_type: must be one of int8, uint8, got 'int4'",
    "stages.train.optimizer=adam": "stages.train.optimizer: must be one of adamw, sgd, got 'adam'",
}


@pytest.mark.parametrize("override", sorted(CHOICES))
def test_a_value_outside_its_set_is_named_with_its_path_and_choices(override, tmp_path):
    from pipeline.core.errors import ConfigError
    from pipeline.core.plan import build_plan

    with pytest.raises(ConfigError) as e:
        build_plan(compose_cfg(["recipe=tiny_int8", "tracking=none", override], tmp_path / "out"))
    assert CHOICES[override] in str(e.value)
    assert not (tmp_path / "out").exists()


def test_the_stage_help_spells_out_a_set():
    from pipeline.cli.stages import parameters
    from pipeline.stages import discover

    rows = {name: kind for name, kind, _, _ in parameters(discover()["prune"])}
    assert rows["method"] == "one of: structured | unstructured" and rows["schedule"] == "one of: oneshot | gradual"
