"""A stage reads exactly what its cache key holds: every declared config value changes the key, no other does, and a
stage that reads an undeclared value fails (statically here for every stage module, and at run time)."""
from __future__ import annotations

import ast
import copy
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import ROOT, compose_cfg
from pipeline.core import codekey, runner, settings
from pipeline.core.plan import Task
from pipeline.core.settings import DATA, HOST, UndeclaredSetting
from pipeline.stages import discover

STAGES = discover()
# Config values no stage should need to know; each perturbed where a stage does not declare it.
UNDECLARED_CANDIDATES = ("gate.max_accuracy_drop", "seed", "model.width_mult", "device.threads", "device.name",
                         "tracking.experiment", "registry.name", "data.val_fraction")


@pytest.fixture(scope="module")
def base_cfg():
    cfg = compose_cfg(["recipe=mobilenet_int8", "device=pixel7"])
    OmegaConf.set_struct(cfg, False)
    return cfg


def key(cls, cfg, data_fp: str = "fp", host: dict | None = None) -> str:
    from pipeline.core.cache import digest

    from pipeline.core import host as host_mod

    real = host_mod.identity
    if host is not None:
        host_mod.identity = lambda: host
    try:
        task = Task(cls.type, cls.type, cls, None, {}, [], None, settings.resolve(cls.type, tuple(cls.reads), cfg))
    finally:
        host_mod.identity = real
    extra = cls.key_extra
    try:
        cls.key_extra = classmethod(lambda c, p, s: {})  # (import_model hashes the file its params name)
        return digest(runner.components(task, {}, lambda: data_fp))
    finally:
        cls.key_extra = extra


def perturbed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value * 2 + 1
    if isinstance(value, str):
        return value + "_changed"
    if isinstance(value, list):
        return [*value, "changed"]
    if isinstance(value, dict):
        return {**value, "changed": 1}
    return "changed"


def perturb(cfg, path: str):
    """A copy of `cfg` with the value at `path` changed (for a section: its first scalar field)."""
    from omegaconf import DictConfig

    cfg = copy.deepcopy(cfg)
    value = OmegaConf.select(cfg, path)
    while isinstance(value, DictConfig):
        k = next(k for k, v in value.items() if not isinstance(v, (list, type(None))) and not OmegaConf.is_list(v))
        path, value = f"{path}.{k}", value[k]
    OmegaConf.update(cfg, path, perturbed(value), force_add=True)
    return cfg


def covered(path: str, reads) -> bool:
    return any(path == r or path.startswith(r + ".") or r.startswith(path + ".") for r in reads)


@pytest.mark.parametrize("stage_type", sorted(STAGES))
@pytest.mark.slow
def test_every_declared_value_is_in_the_key_and_nothing_else(stage_type, base_cfg):
    cls = STAGES[stage_type]
    base = key(cls, base_cfg)
    assert key(cls, base_cfg) == base  # deterministic
    for path in cls.reads:
        if path == DATA:
            assert key(cls, base_cfg, data_fp="other data") != base, f"{stage_type}: the data set is not in its key"
            continue
        if path == HOST:
            other = {"cpu": "another CPU", "cores": 64, "machine": "aarch64", "isa": ["asimddp"]}
            assert key(cls, base_cfg, host=other) != base, f"{stage_type}: the host is not in its key"
            continue
        assert key(cls, perturb(base_cfg, path)) != base, f"{stage_type}: changing {path} leaves its key unchanged"
    if DATA not in cls.reads:
        assert key(cls, base_cfg, data_fp="other data") == base
    if HOST not in cls.reads:
        assert key(cls, base_cfg, host={"cpu": "another CPU"}) == base
    tried = 0
    for path in UNDECLARED_CANDIDATES:
        if covered(path, cls.reads):
            continue
        assert key(cls, perturb(base_cfg, path)) == base, f"{stage_type}: {path} is not declared but changes its key"
        tried += 1
    assert tried >= 2


def _settings_paths(fn: ast.AST) -> set[str]:
    """Dotted paths read as ctx.settings.a.b... (or ctx.settings["a"]) in a function body."""
    out = set()
    for node in ast.walk(fn):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) \
                and node.value.attr == "settings" and isinstance(node.value.value, ast.Name) \
                and node.value.value.id == "ctx":
            parts, cur = [node.attr], node
            parent = getattr(node, "_parent", None)
            while isinstance(parent, ast.Attribute) and parent.value is cur:
                parts.append(parent.attr)
                cur, parent = parent, getattr(parent, "_parent", None)
            if parts[-1] in ("get", "to_dict"):
                parts.pop()
            out.add(".".join(parts))
    return out


def _with_parents(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            child._parent = node
    return tree


STAGE_MODULES = sorted(p for p in (ROOT / "pipeline" / "stages").glob("*.py") if p.name != "__init__.py")


@pytest.mark.parametrize("path", STAGE_MODULES, ids=lambda p: p.name)
def test_stage_modules_read_only_declared_settings(path: Path):
    source = path.read_text()
    assert "ctx.cfg" not in source, f"{path.name} reads the whole config (ctx.cfg); declare what it needs in `reads`"
    tree = _with_parents(ast.parse(source))
    classes = {c.type: c for c in STAGES.values() if Path(c.__module__.replace(".", "/") + ".py").name == path.name}
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef):
            continue
        cls = next((c for c in classes.values() if c.__name__ == node.name), None)
        if cls is None:
            continue
        reads = tuple(cls.reads)
        for path_read in _settings_paths(node):
            assert covered(path_read, reads) and any(path_read == r or path_read.startswith(r + ".") for r in reads), \
                f"{cls.type} reads ctx.settings.{path_read} but declares only {reads}"
        uses_data = any(isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "data"
                        and isinstance(n.func.value, ast.Name) and n.func.value.id == "ctx" for n in ast.walk(node))
        if uses_data:
            assert DATA in reads, f"{cls.type} calls ctx.data() but does not declare \"data\" in `reads`"


def test_reading_an_undeclared_value_raises_and_names_the_fix(base_cfg):
    s = settings.resolve("demo", ("seed", "device.threads"), base_cfg)
    assert s.seed == base_cfg.seed and s.device.threads == base_cfg.device.threads
    with pytest.raises(UndeclaredSetting, match=r"'device.name'.*add 'device.name' to its `reads`"):
        s.device.name
    with pytest.raises(UndeclaredSetting, match="'gate'"):
        s.gate.max_accuracy_drop
    with pytest.raises(TypeError, match="read-only"):
        s.device.threads = 1
    whole = settings.resolve("demo", ("device",), base_cfg)
    assert whole.device.name == base_cfg.device.name and whole.device.get("no_such_field") is None


def test_loading_data_without_declaring_it_raises(tmp_path):
    from pipeline.stages.base import StageContext

    ctx = StageContext(name="x", params=None, settings=settings.resolve("demo", ("seed",), OmegaConf.create({"seed": 0})),
                       inputs={}, workdir=tmp_path, lineage=lambda s: [], log=None, _data_loader=lambda: 1)
    with pytest.raises(UndeclaredSetting, match='add "data" to its `reads`'):
        ctx.data()


def test_code_in_the_key_follows_imports_and_only_the_registry_entries_a_task_reaches():
    rel = lambda ps: {str(p.relative_to(ROOT / "pipeline")) for p in ps}
    onnx = frozenset({"onnx", "torch", "mobilenet_v2"})
    files = rel(codekey.code_files(STAGES["export_onnx"], onnx))
    # export_onnx's module imports the converter, which imports the runtime layer; the registries are followed into
    # the entries its formats and settings name (RUNTIMES["onnx"], ZOO["mobilenet_v2"]) and no others
    assert {"stages/export_onnx.py", "convert/onnx.py", "models/__init__.py", "runtimes/__init__.py",
            "runtimes/onnx_rt.py", "models/mobilenet_v2.py"} <= files
    assert not files & {"stages/train.py", "runtimes/coreml_rt.py", "models/resnet.py", "core/console.py"}
    assert "devices/calibration.json" in rel(codekey.code_files(STAGES["profile"]))
    assert {"onnx", "onnxruntime", "torch"} <= set(codekey.library_versions(STAGES["export_onnx"], onnx))
