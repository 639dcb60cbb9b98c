"""The model's input size: `model.input_size` is one side (a square, e.g. 224) or [H, W] (e.g. [608, 800] for a
detector that takes 800x608 images). Every loader, stage and check reads it through `hw`. Imports nothing."""
from __future__ import annotations

from typing import Any


def hw(size: Any) -> tuple[int, int]:
    """(height, width) of an input size given as one int or [H, W]."""
    if isinstance(size, (int, float)) and not isinstance(size, bool):
        return int(size), int(size)
    try:
        h, w = list(size)
        return int(h), int(w)
    except (TypeError, ValueError):
        raise ValueError(f"model.input_size: give one side (224) or [H, W] ([608, 800]), got {size!r}") from None


SQUARE_ONLY = ("digits_detection", "digits_segmentation")  # composed digits: square canvases


def problems(size: Any, data_name: str | None = None) -> list[str]:
    """Plan-time: the size is one positive whole number or two, and the data set can be made at that shape."""
    try:
        h, w = hw(size)
        given = [size, size] if isinstance(size, (int, float)) else list(size)
    except ValueError as e:
        return [str(e)]
    if h <= 0 or w <= 0 or [float(v) for v in given] != [h, w]:
        return [f"model.input_size: sides must be positive whole numbers, got {size!r}"]
    if h != w and data_name in SQUARE_ONLY:
        return [f"model.input_size: data={data_name} composes square canvases, so [{h}, {w}] is not supported for "
                f"it; give one side (e.g. model.input_size={max(h, w)}) or bring images of your own (data=coco, yolo "
                f"or masks)"]
    return []


def key(size: Any):
    """The size as the cache key and the log show it: a square's side alone (so square runs keep their keys)."""
    h, w = hw(size)
    return h if h == w else (h, w)


def shown(size: Any) -> str:
    h, w = hw(size)
    return f"{h}px" if h == w else f"{h}x{w} (HxW)"
