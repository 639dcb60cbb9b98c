"""Stage modules register themselves on import; `load_all` imports every module of this package (no list to edit)."""
from __future__ import annotations

import importlib
import pkgutil

from pipeline.stages.base import REGISTRY, Stage, StageContext, StageResult

__all__ = ["REGISTRY", "Stage", "StageContext", "StageResult", "load_all"]


def load_all() -> dict[str, type[Stage]]:
    for mod in pkgutil.iter_modules(__path__):
        if not mod.name.startswith("_") and mod.name != "base":
            importlib.import_module(f"{__name__}.{mod.name}")
    return REGISTRY
