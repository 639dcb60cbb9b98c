"""Property: whatever the command-line overrides or however a recipe is mutated, the planner either accepts the config
or refuses it with a clear error (a composition error from Hydra, or pipeline.core.errors.ConfigError) -- never a
traceback from somewhere else. Planning writes nothing, so every example is cheap."""
from __future__ import annotations

import copy
import string

import pytest
from hydra.errors import HydraException
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from conftest import compose_cfg
from pipeline import app
from pipeline.core.errors import ConfigError
from pipeline.stages import discover as load_all

STAGE_NAMES = ["train", "export", "quantize", "evaluate", "benchmark"]
KEYS = [
    "seed", "description", "model.name", "model.input_size", "model.width_mult", "model.dropout", "data.name",
    "data.path", "data.val_fraction", "data.seed", "data.mean", "data.std", "data.max_per_class", "device.name",
    "device.threads", "device.formats", "cache.enabled", "cache.force", "gate.max_accuracy_drop", "tracking.enabled",
    "tracking.timeout_s", "paths.outputs",
    *[f"stages.{s}.{k}" for s in STAGE_NAMES for k in ("type", "inputs")],
    "stages.train.epochs", "stages.train.lr", "stages.train.optimizer", "stages.train.batch_size",
    "stages.quantize.calibration_samples", "stages.quantize.method", "stages.quantize.activation_type",
    "stages.quantize.exclude_op_types", "stages.evaluate.max_samples", "stages.benchmark.iterations",
    "stages.benchmark.warmup", "stages.export.opset",
]
WORD = st.text(alphabet=string.ascii_letters + string.digits + "_-./", min_size=1, max_size=12)
SCALAR = st.one_of(
    st.integers(-10**9, 10**9).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(lambda f: {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(
        str(f), repr(f))),
    st.sampled_from(["true", "false", "null", "''", "[]", "{}", "${seed}", "${nowhere}", "${model.input_size}",
                     *STAGE_NAMES, *load_all()]),
    WORD.map(lambda w: f"'{w}'"),
)
VALUE = st.one_of(SCALAR, st.lists(st.one_of(st.sampled_from(STAGE_NAMES), SCALAR), max_size=3).map(
    lambda xs: "[" + ",".join(xs) + "]"))
OVERRIDE = st.tuples(st.one_of(st.sampled_from(KEYS), WORD), VALUE).map(lambda kv: f"{kv[0]}={kv[1]}")


def _plan_or_clear_error(cfg) -> None:
    try:
        app.prepare(cfg)
    except ConfigError as e:
        msg = str(e)
        assert msg.strip() and "Traceback" not in msg
        assert all(len(line) < 3000 for line in msg.splitlines())


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recipe=st.sampled_from(["tiny_int8", "mobilenet_int8"]), device=st.sampled_from(["host", "pixel7", "iphone15"]),
       overrides=st.lists(OVERRIDE, max_size=4))
@pytest.mark.slow
def test_command_line_overrides(recipe, device, overrides):
    try:
        cfg = compose_cfg([f"recipe={recipe}", f"device={device}", *overrides])
    except (HydraException, OmegaConfBaseException) as e:  # the command line prints these as exit 2 (see __main__)
        assert str(e).strip()
        return
    _plan_or_clear_error(cfg)


BASE = {}


def _base():
    if not BASE:
        BASE["cfg"] = compose_cfg(["recipe=mobilenet_int8", "device=pixel7"])
    return copy.deepcopy(BASE["cfg"])


ANY_VALUE = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                      WORD, st.lists(st.one_of(st.sampled_from(STAGE_NAMES), WORD), max_size=3),
                      st.dictionaries(WORD, st.integers(), max_size=2))
MUTATION = st.one_of(
    st.tuples(st.just("delete"), st.sampled_from(STAGE_NAMES)),
    st.tuples(st.just("rename"), st.sampled_from(STAGE_NAMES), WORD),
    st.tuples(st.just("type"), st.sampled_from(STAGE_NAMES), st.one_of(st.sampled_from(sorted(load_all())), ANY_VALUE)),
    st.tuples(st.just("inputs"), st.sampled_from(STAGE_NAMES),
              st.one_of(st.lists(st.sampled_from([*STAGE_NAMES, "ghost"]), max_size=3), ANY_VALUE)),
    st.tuples(st.just("param"), st.sampled_from(STAGE_NAMES), WORD, ANY_VALUE),
    st.tuples(st.just("add"), WORD, st.sampled_from(sorted(load_all())), st.lists(st.sampled_from(STAGE_NAMES),
                                                                                  max_size=2)),
    st.tuples(st.just("replace"), st.sampled_from(STAGE_NAMES), ANY_VALUE),
)


def _mutate(stages: dict, m: tuple) -> None:
    kind, name = m[0], m[1]
    if kind == "add":
        stages[name] = {"type": m[2], "inputs": m[3]}
    elif name not in stages:
        return
    elif kind == "delete":
        del stages[name]
    elif kind == "rename":
        stages[m[2]] = stages.pop(name)
    elif kind == "replace":
        stages[name] = m[2]
    elif isinstance(stages[name], dict):
        if kind == "type":
            stages[name]["type"] = m[2]
        elif kind == "inputs":
            stages[name]["inputs"] = m[2]
        elif kind == "param":
            stages[name][m[2]] = m[3]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutations=st.lists(MUTATION, min_size=1, max_size=4))
@pytest.mark.slow
def test_recipe_mutations(mutations):
    cfg = _base()
    stages = OmegaConf.to_container(cfg.stages)
    for m in mutations:
        _mutate(stages, m)
    try:
        cfg.stages = OmegaConf.create(stages)
    except OmegaConfBaseException:  # e.g. a key OmegaConf cannot hold: YAML could not express it either
        return
    _plan_or_clear_error(cfg)


@pytest.mark.parametrize("stages", [{}, {"a": None}, {"a": []}, {"a": {"type": None}}, {"a": {"type": "train",
                                    "inputs": {"x": 1}}}, {"": {"type": "train"}}, {"a b": {"type": "train"}}])
def test_odd_recipes_found_by_the_property(stages):
    cfg = _base()
    cfg.stages = OmegaConf.create(stages)
    _plan_or_clear_error(cfg)
