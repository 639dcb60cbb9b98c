"""What a stage may read, and what its cache key holds: the two are the same object.

A stage declares, by dotted path, the config values its `run` reads (`reads = ("seed", "device.threads")`; a whole
section such as `"device"` counts too). The planner resolves those values into a frozen `Settings` per task; the
runner hashes exactly that into the key and hands the stage nothing else. A path the stage did not declare is not in
the object, so reading it raises `UndeclaredSetting` (in tests, never as a silently stale cache in a user's run).

`"data"` is special: it is not a config path but the data set the run loads (`ctx.data()`); declaring it puts the
data fingerprint (the data section, the files and the input size they are resized to) into the key.

`"host"` is special too: the identity of this machine (CPU model, cores, the instruction sets timing depends on),
declared by stages that time models here, so that a timing made on another CPU is never reused.

The code and library versions in the key are derived from the source (pipeline.core.codekey). Imports no ML
framework.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

from omegaconf import DictConfig, ListConfig, OmegaConf

DATA = "data"  # the pseudo-path of the loaded data set
HOST = "host"  # the pseudo-path of this machine's identity (pipeline.core.host.identity)
PSEUDO = (DATA, HOST)


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
    if HOST in reads:
        from pipeline.core.host import identity

        values[HOST] = identity()
    for path in sorted(set(reads) - set(PSEUDO)):
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
