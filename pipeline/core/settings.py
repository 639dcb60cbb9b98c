"""What a stage may read, and what its cache key holds: the two are the same object.

A stage declares, by dotted path, the config values its `run` reads (`reads = ("seed", "device.threads")`; a whole
section such as `"device"` counts too). The planner resolves those values into a frozen `Settings` per task; the
runner hashes exactly that into the key and hands the stage nothing else. A path the stage did not declare is not in
the object, so reading it raises `UndeclaredSetting` (in tests, never as a silently stale cache in a user's run).

`"data"` is special: it is not a config path but the data set the run loads (`ctx.data()`); declaring it puts the
data fingerprint (the data section, the files and the input size they are resized to) into the key.

The stage's code in the key is derived too (`code_files`): the source of its module and of every `pipeline.*`
module that module imports, at module level or inside a function or by name (a string such as
"pipeline.runtimes.onnx_rt" handed to importlib), followed transitively, plus the data files (JSON, YAML, CSV, NumPy)
that sit beside those modules. So are the library versions: the distributions providing every third-party module
imported anywhere in that closure. Nothing is listed by hand. Imports no ML framework.
"""
from __future__ import annotations

import ast
import copy
import inspect
import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator, Mapping

from omegaconf import DictConfig, ListConfig, OmegaConf

DATA = "data"  # the pseudo-path of the loaded data set
PKG_DIR = Path(__file__).resolve().parent.parent  # the pipeline package
DATA_SUFFIXES = (".json", ".yaml", ".yml", ".csv", ".npy", ".npz")


class UndeclaredSetting(AttributeError):
    """A stage read a config value it does not declare in `reads` (a bug in the stage, named with its fix)."""


def _plain(v: Any) -> Any:
    if isinstance(v, (DictConfig, ListConfig)):
        return OmegaConf.to_container(v, resolve=True)
    return copy.deepcopy(v)


def _lookup(cfg: Any, path: str) -> Any:
    node = cfg
    for part in path.split("."):
        if isinstance(node, (DictConfig, Mapping)):
            if part not in node:
                raise KeyError(path)
            node = node[part]
        else:
            raise KeyError(path)
    return _plain(node)


def resolve(stage_type: str, reads: tuple[str, ...], cfg: Any) -> "Settings":
    """The frozen settings of one task: the declared config values, nested as in the config. A declared path the
    config lacks resolves to None (optional device fields), so the key still records that it was absent."""
    values: dict[str, Any] = {}
    for path in sorted(set(reads) - {DATA}):
        try:
            value = _lookup(cfg, path)
        except KeyError:
            value = None
        node = values
        parts = path.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return Settings(stage_type, tuple(sorted(set(reads))), values)


class _View(Mapping):
    """Read-only attribute and item access over one section of the settings; an undeclared key names the fix."""

    __slots__ = ("_stage", "_prefix", "_values", "_whole")

    def __init__(self, stage: str, prefix: str, values: dict, whole: frozenset[str]):
        object.__setattr__(self, "_stage", stage)
        object.__setattr__(self, "_prefix", prefix)
        object.__setattr__(self, "_values", values)
        object.__setattr__(self, "_whole", whole)  # sections declared whole: a key they lack is simply absent

    def _inside_whole(self) -> bool:
        parts = self._prefix.split(".") if self._prefix else []
        return any(".".join(parts[:i]) in self._whole for i in range(1, len(parts) + 1))

    def _child(self, key: str) -> Any:
        path = f"{self._prefix}.{key}" if self._prefix else key
        if key not in self._values:
            if self._inside_whole():
                raise KeyError(path)
            raise UndeclaredSetting(
                f"stage type {self._stage!r} read config value {path!r}, which it does not declare: add {path!r} "
                f"to its `reads` so that the cache key holds it")
        v = self._values[key]
        if isinstance(v, dict):
            return _View(self._stage, path, v, self._whole)
        return copy.deepcopy(v)

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__"):
            raise AttributeError(key)
        try:
            return self._child(key)
        except KeyError as e:
            raise AttributeError(f"config value {e.args[0]!r} is not set") from None

    def __getitem__(self, key: str) -> Any:
        return self._child(key)

    def __setattr__(self, key, value):
        raise TypeError("settings are read-only: a stage may not change the configuration")

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self._child(key)
        except KeyError:
            return default

    def to_dict(self) -> dict:
        """A deep copy as plain data (e.g. the whole device profile for a library function)."""
        return copy.deepcopy(self._values)


@dataclass(frozen=True)
class Settings:
    """The declared config values of one task, read-only; `values` is what the cache key hashes."""

    stage: str
    reads: tuple[str, ...]
    values: dict

    @property
    def view(self) -> _View:
        return _View(self.stage, "", self.values, frozenset(r for r in self.reads if r != DATA))

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):
            raise AttributeError(key)
        return getattr(self.view, key)

    def __getitem__(self, key: str) -> Any:
        return self.view[key]

    @property
    def reads_data(self) -> bool:
        return DATA in self.reads


# --- the code part of a key ---------------------------------------------------------------------------------------
def _module_file(name: str) -> Path | None:
    """The source file of a `pipeline.*` module (or package __init__) without importing it."""
    if name != "pipeline" and not name.startswith("pipeline."):
        return None
    if name == "pipeline":
        return PKG_DIR / "__init__.py"
    rel = Path(*name.split(".")[1:])
    for cand in (PKG_DIR / rel.with_suffix(".py"), PKG_DIR / rel / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def _module_name(path: Path) -> str | None:
    try:
        rel = path.resolve().relative_to(PKG_DIR)
    except ValueError:
        return None
    parts = ["pipeline", *rel.with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


_DOTTED = re.compile(r"^pipeline(\.[A-Za-z_][A-Za-z0-9_]*)+$")


@lru_cache(maxsize=None)
def imported_names(path: Path, module: str | None) -> frozenset[str]:
    """Every module name `path` imports, at any depth of its code (lazy imports inside functions included), plus
    string constants that name a `pipeline.*` module (imported by name with importlib, or run with `python -m`);
    `from a import b` yields `a` and `a.b` (b may be a submodule). Relative imports are resolved against `module`."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and _DOTTED.match(node.value):
            out.add(node.value)  # a module named for importlib (pipeline.runtimes.RUNTIMES, `python -m` targets)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level and module:
                pkg = module if is_pkg else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    pkg = pkg.rpartition(".")[0]
                base = f"{pkg}.{base}" if base else pkg
            if base:
                out.add(base)
                out.update(f"{base}.{a.name}" for a in node.names if a.name != "*")
    return frozenset(out)


@lru_cache(maxsize=None)
def _closure(start: Path) -> tuple[frozenset[Path], frozenset[str]]:
    """(pipeline source files, third-party top-level module names) reachable from `start` through imports."""
    files: set[Path] = set()
    external: set[str] = set()
    todo = [start]
    while todo:
        f = todo.pop()
        if f in files:
            continue
        files.add(f)
        for name in imported_names(f, _module_name(f)):
            top = name.split(".")[0]
            if top != "pipeline":
                if top not in sys.stdlib_module_names and not top.startswith("_"):
                    external.add(top)
                continue
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ too
                mf = _module_file(".".join(parts[:i]))
                if mf is not None and mf not in files:
                    todo.append(mf)
    return frozenset(files), frozenset(external)


def _source_file(cls: type) -> Path:
    return Path(inspect.getsourcefile(cls)).resolve()


def code_files(cls: type) -> list[Path]:
    """The files whose content decides a stage's result: its module, every pipeline module it reaches through
    imports, and the data files beside those modules."""
    files, _ = _closure(_source_file(cls))
    data = {p for f in files if f.is_relative_to(PKG_DIR)
            for p in f.parent.iterdir() if p.suffix in DATA_SUFFIXES and p.is_file()}
    return sorted(files | data)


def code_digest(cls: type, digest) -> str:
    # Files outside the package (plug-ins, tests) are named by file name only, so that the key does not depend on
    # where a checkout sits.
    name = lambda p: str(p.relative_to(PKG_DIR)) if p.is_relative_to(PKG_DIR) else p.name
    return digest({name(p): p.read_bytes().decode("utf-8", "replace") for p in code_files(cls)})[:16]


@lru_cache(maxsize=1)
def _distributions() -> dict[str, list[str]]:
    return metadata.packages_distributions()


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def library_versions(cls: type) -> dict[str, str]:
    """Versions of the distributions a stage can reach: those providing the third-party modules imported anywhere in
    its code closure, plus any it declares in `libraries` (a distribution used without an import of its own)."""
    _, external = _closure(_source_file(cls))
    dists = set(getattr(cls, "libraries", ()))
    for top in external:
        dists.update(_distributions().get(top, ()))
    norm = {re.sub(r"[-_.]+", "-", d).lower() for d in dists}
    return {d: _version(d) for d in sorted(norm)}
