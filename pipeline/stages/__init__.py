"""Stage types, found rather than listed: every `Stage` subclass with a `type` defined in a module of this package,
plus those other packages publish under the entry-point group `edge_pipeline.stages`.

A user adds a stage type from their own package without editing this project:

    [project.entry-points."edge_pipeline.stages"]
    my_stage = "my_package.stages:MyStage"      # a Stage subclass, or a module holding several

`discover()` builds a fresh registry each time (one per plan), so a stage defined elsewhere in a process (a test's
stub) never shows up in another plan or in a user's error messages; tests hand theirs in with `extra`.
"""
from __future__ import annotations

import importlib
import inspect
import logging
import pkgutil
from functools import lru_cache
from importlib import metadata
from types import ModuleType
from typing import Iterable

from pipeline.core.errors import ConfigError
from pipeline.stages.base import Stage, StageContext, StageResult

__all__ = ["ENTRY_POINT_GROUP", "Stage", "StageContext", "StageResult", "discover", "builtin"]

ENTRY_POINT_GROUP = "edge_pipeline.stages"
log = logging.getLogger("pipeline")


def _stage_classes(module: ModuleType) -> list[type[Stage]]:
    return [c for c in vars(module).values()
            if inspect.isclass(c) and issubclass(c, Stage) and c.__module__ == module.__name__ and "type" in c.__dict__]


def _add(registry: dict[str, type[Stage]], cls: type[Stage], origin: str) -> None:
    prev = registry.get(cls.type)
    if prev is not None and prev is not cls:
        raise ConfigError(f"stage type {cls.type!r} is defined twice: by {prev.__module__}.{prev.__name__} and by "
                          f"{cls.__module__}.{cls.__name__} ({origin}); rename one of them")
    registry[cls.type] = cls


@lru_cache(maxsize=1)
def builtin() -> tuple[type[Stage], ...]:
    """The stage classes of this package's modules (imported once; none imports an ML framework at module level)."""
    out: list[type[Stage]] = []
    for mod in pkgutil.iter_modules(__path__):
        if not mod.name.startswith("_") and mod.name != "base":
            out += _stage_classes(importlib.import_module(f"{__name__}.{mod.name}"))
    return tuple(out)


def _plugins() -> list[tuple[type[Stage], str]]:
    out = []
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        origin = f"entry point {ep.name!r} = {ep.value!r}" + (f" of {ep.dist.name}" if ep.dist else "")
        try:
            obj = ep.load()
        except Exception as e:  # a broken plug-in is named, never a traceback from deep inside importlib
            raise ConfigError(f"cannot load the stage plug-in {origin}: {type(e).__name__}: {e}; fix or uninstall "
                              f"that package") from e
        classes = _stage_classes(obj) if isinstance(obj, ModuleType) else [obj]
        for c in classes:
            if not (inspect.isclass(c) and issubclass(c, Stage) and "type" in c.__dict__):
                raise ConfigError(f"the stage plug-in {origin} names {c!r}, which is not a Stage subclass with a "
                                  f"`type`; point it at a pipeline.stages.Stage subclass or a module of them")
            out.append((c, origin))
    return out


def discover(extra: Iterable[type[Stage]] = ()) -> dict[str, type[Stage]]:
    """A new registry: built-in stage types, plug-ins' entry points, then `extra` (stage classes handed in)."""
    registry: dict[str, type[Stage]] = {}
    for c in builtin():
        _add(registry, c, "built in")
    for c, origin in _plugins():
        _add(registry, c, origin)
    for c in extra:
        _add(registry, c, "handed to the planner")
    return registry
