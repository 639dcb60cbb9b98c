"""Typed artifacts: what flows along the DAG's edges."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Formats a stage may accept or produce. A mismatch is a planning error, not a crash later.
FORMATS = ("torch", "onnx", "tflite", "keras", "coreml", "executorch", "openvino")


@dataclass
class Artifact:
    """A model file (or package directory) produced by a stage and stored in the cache."""

    stage: str  # the stage that produced it
    format: str  # one of FORMATS
    precision: str  # fp32 | fp16 | int8 | int8-weights ...
    path: Path  # absolute path of the main file or package directory
    meta: dict[str, Any] = field(default_factory=dict)  # input shape, class count, quantization details ...
    key: str = ""  # cache key of the stage run that made it

    @property
    def size_bytes(self) -> int:
        return path_size(self.path)


def path_size(path: Path) -> int:
    """Size of a file, or the total of a directory tree (Core ML packages are directories). An OpenVINO IR
    (`model.xml`) counts with its weights (`model.bin` beside it)."""
    path = Path(path)
    if path.is_file():
        weights = path.with_suffix(".bin")
        extra = weights.stat().st_size if path.suffix == ".xml" and weights.is_file() else 0
        return path.stat().st_size + extra
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def safe_name(name: str, what: str = "name") -> str:
    """Refuse names that could escape a directory when used as a path component."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or os.sep in name or "\x00" in name:
        raise ValueError(f"{what} {name!r} cannot be used as a file name: use letters, digits, '-', '_' or '.'")
    return name
