"""A folder with one sub-folder of images per class (the layout users bring)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.data.files import _class_dirs, _images


def read_folder(root: Path, input_size: int, max_per_class: int | None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Decode, convert to RGB and resize every image; an unreadable file is named with the fix."""
    from PIL import Image, UnidentifiedImageError

    xs, ys = [], []
    classes = [c.name for c in _class_dirs(root)]
    for label, cname in enumerate(classes):
        files = _images(root / cname)[: max_per_class or None]
        for f in files:
            try:
                with Image.open(f) as im:
                    im = im.convert("RGB").resize((input_size, input_size), Image.BILINEAR)
                    xs.append(np.asarray(im, np.float32).transpose(2, 0, 1) / 255.0)
            except (UnidentifiedImageError, OSError, ValueError) as e:
                raise ValueError(f"cannot read image {f}: {e}. Remove or replace the file, then re-run.") from e
            ys.append(label)
    return np.stack(xs), np.asarray(ys, np.int64), classes
