"""Segmentation data: an image and a mask of class indices per pixel, in two layouts.

  digits_segmentation  offline default: scikit-learn's digits composed on canvases (pipeline.data.composed);
                       11 classes, 0 = background, d + 1 = digit d
  masks                data.path/images/NAME.jpg with data.path/masks/NAME.png (a single-channel or palette PNG whose
                       pixel values are class indices, 255 = ignore); class names in data.classes (index order)

Images are resized to the model's square input (bilinear) and masks with them (nearest neighbour, so no new classes
appear at the edges).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data.checks import listing, masks as check_masks
from pipeline.data._common import (Dataset, check_norm, expand, fingerprint_files, images_under, norm_of, normalize,
                                   read_rgb, refuse, seeded_split, settings_of)

NAMES = ("digits_segmentation", "masks")
IGNORE_INDEX = 255


@dataclass
class SegmentationDataset(Dataset):
    """float32 NCHW images; int64 masks [N, H, W] of class indices (255 = ignore) as the labels."""

    task: str = "segmentation"


def _pairs(root: Path) -> tuple[list[tuple[Path, Path]], list[str]]:
    pairs, missing = [], []
    for img in images_under(root / "images"):
        m = root / "masks" / (img.stem + ".png")
        (pairs.append((img, m)) if m.is_file() else missing.append(img.name))
    return pairs, missing


def check(data_cfg: Any) -> list[str]:
    from pipeline.data.composed import check_composed

    if data_cfg.name not in NAMES:
        return [f"data.name: {data_cfg.name!r} is not a segmentation data set; choose one of {', '.join(NAMES)}"]
    problems = check_norm(data_cfg)
    if data_cfg.name == "digits_segmentation":
        return problems + check_composed(data_cfg)
    if not 0.0 < float(data_cfg.val_fraction) < 1.0:
        problems.append(f"data.val_fraction: must be between 0 and 1 (exclusive), got {data_cfg.val_fraction}")
    if not data_cfg.get("path"):
        return problems + ["data.path: data=masks needs a folder with images/ and masks/: add data.path=DIR"]
    root = expand(data_cfg.path)
    if not (root / "images").is_dir() or not (root / "masks").is_dir():
        return problems + [f"data.path: {str(root)!r} needs images/ and masks/ sub-folders (images/NAME.jpg with "
                           f"masks/NAME.png)"]
    if not data_cfg.get("classes"):
        return problems + ["data.classes: give the class names in mask-value order, e.g. "
                           "data.classes=[background,cat]"]
    if not images_under(root / "images"):
        return problems + [f"data.path: {str(root / 'images')!r} holds no images"]
    return problems + listing(
        f"data.path: the mask set {str(root)!r}", check_masks(root, len(data_cfg.classes), IGNORE_INDEX),
        f"Add or fix these masks (one class index per pixel, the size of its image, values below the "
        f"{len(data_cfg.classes)} data.classes or {IGNORE_INDEX}), then re-run: nothing ran.")


def fingerprint(data_cfg: Any, input_size: int) -> str:
    s = settings_of(data_cfg, input_size)
    if data_cfg.name == "digits_segmentation":
        return fingerprint_files(s, [], bundled=True)
    root = expand(data_cfg.path)
    return fingerprint_files(s, [p for pair in _pairs(root)[0] for p in pair], root)


def read_masks(root: Path, size: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    xs, ms = [], []
    for img, mpath in _pairs(root)[0]:
        x, wh = read_rgb(img, size)
        with Image.open(mpath) as m:
            if m.mode not in ("L", "P", "I", "I;16"):
                raise ValueError(f"mask {mpath} is a {m.mode} image; a mask holds one class index per pixel "
                                 f"(a single-channel or palette PNG)")
            if m.size != wh:
                raise ValueError(f"mask {mpath} is {m.size[0]}x{m.size[1]} but its image is {wh[0]}x{wh[1]}")
            from pipeline.data.size import hw

            h, w = hw(size)
            mask = np.asarray(m.resize((w, h), Image.NEAREST)).astype(np.int64)
        bad = np.setdiff1d(np.unique(mask), [*range(num_classes), IGNORE_INDEX])
        if bad.size:
            raise ValueError(f"mask {mpath} holds values {bad.tolist()}, not classes 0..{num_classes - 1} of "
                             f"data.classes (or {IGNORE_INDEX} = ignore): fix the mask or data.classes")
        xs.append(x)
        ms.append(mask)
    return np.stack(xs), np.stack(ms)


def load(data_cfg: Any, input_size: int) -> SegmentationDataset:
    refuse(check(data_cfg))
    if data_cfg.name == "digits_segmentation":
        from pipeline.data.composed import DIGIT_CLASSES, normalised_split

        tr_x, tr, va_x, va, meta = normalised_split(data_cfg, input_size)
        return SegmentationDataset(tr_x, tr.masks, va_x, va.masks, ["background", *DIGIT_CLASSES], meta=meta)
    classes = [str(c) for c in data_cfg.classes]
    x, m = read_masks(expand(data_cfg.path), input_size, len(classes))
    tr, va = seeded_split(len(x), float(data_cfg.val_fraction), int(data_cfg.seed))
    x = normalize(x, data_cfg)
    return SegmentationDataset(x[tr], m[tr], x[va], m[va], classes,
                               meta={"name": data_cfg.name, "input_size": input_size, **norm_of(data_cfg), "train": len(tr), "val": len(va)})
