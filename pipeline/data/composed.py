"""Offline detection and segmentation data: scikit-learn's bundled 8x8 digits composed on larger canvases.

Every canvas holds 1-3 digits, each scaled to a random size and placed without heavy overlap on a dark, lightly noisy
background; its box is the tight box of the digit's ink and its mask the ink pixels (class = digit + 1, 0 =
background). Training canvases use only training digits and validation canvases only held-out ones (a stratified
split of the 1797 digit images), so no digit image is in both. Deterministic for a given seed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DIGIT_CLASSES = [str(i) for i in range(10)]


@dataclass
class Composed:
    images: np.ndarray  # [N, 3, S, S] float32 in [0, 1]
    boxes: list  # per image float32 [k, 4] x1 y1 x2 y2 in pixels
    labels: list  # per image int64 [k] digit classes 0-9
    masks: np.ndarray  # [N, S, S] int64, 0 = background, d + 1 = digit d


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def digit_split(val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Training and held-out digit images ([n, 8, 8] in [0, 1]) with their classes, stratified by class."""
    from sklearn.datasets import load_digits

    from pipeline.data._common import stratified_split as _split

    d = load_digits()
    tr, va = _split(d.target, val_fraction, seed)
    imgs = (d.images / 16.0).astype(np.float32)
    return imgs[tr], d.target[tr].astype(np.int64), imgs[va], d.target[va].astype(np.int64)


def compose(digits: np.ndarray, classes: np.ndarray, n: int, size: int, seed: int, per_image: tuple[int, int] = (1, 3),
            digit_size: tuple[float, float] = (0.25, 0.45), max_overlap: float = 0.05) -> Composed:
    """n canvases of size x size from the given digit images."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    images = np.zeros((n, size, size), np.float32)
    masks = np.zeros((n, size, size), np.int64)
    all_boxes, all_labels = [], []
    lo, hi = max(6, int(round(digit_size[0] * size))), max(7, int(round(digit_size[1] * size)))
    for i in range(n):
        canvas = rng.normal(0.05, 0.03, (size, size)).clip(0, 1).astype(np.float32)
        boxes, labels = [], []
        for _ in range(int(rng.integers(per_image[0], per_image[1] + 1))):
            for _attempt in range(20):  # a free spot is found almost always; give up on a crowded canvas
                s = int(rng.integers(lo, hi + 1))
                x0, y0 = int(rng.integers(0, size - s + 1)), int(rng.integers(0, size - s + 1))
                j = int(rng.integers(len(digits)))
                glyph = np.asarray(Image.fromarray(digits[j], mode="F").resize((s, s), Image.BILINEAR))
                ys, xs = np.nonzero(glyph > 0.25)
                if not len(xs):
                    continue
                box = np.array([x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1], np.float32)
                if all(_iou(box, b) <= max_overlap for b in boxes):
                    break
            else:
                continue
            region = canvas[y0 : y0 + s, x0 : x0 + s]
            np.maximum(region, glyph * rng.uniform(0.7, 1.0), out=region)
            masks[i, y0 : y0 + s, x0 : x0 + s][glyph > 0.4] = classes[j] + 1
            boxes.append(box)
            labels.append(int(classes[j]))
        images[i] = canvas
        all_boxes.append(np.asarray(boxes, np.float32).reshape(-1, 4))
        all_labels.append(np.asarray(labels, np.int64))
    return Composed(np.repeat(images[:, None], 3, axis=1), all_boxes, all_labels, masks)


def composed_split(data_cfg, size: int) -> tuple[Composed, Composed]:
    """(training, validation) canvases of a digits_detection / digits_segmentation config."""
    tr_d, tr_c, va_d, va_c = digit_split(float(data_cfg.val_fraction), int(data_cfg.seed))
    per = tuple(int(v) for v in data_cfg.digits_per_image)
    dsize = tuple(float(v) for v in data_cfg.digit_size)
    train = compose(tr_d, tr_c, int(data_cfg.train_images), size, int(data_cfg.seed), per, dsize)
    val = compose(va_d, va_c, int(data_cfg.val_images), size, int(data_cfg.seed) + 1, per, dsize)
    return train, val


def normalised_split(data_cfg, size: int) -> tuple[np.ndarray, Composed, np.ndarray, Composed, dict]:
    """`composed_split` with both splits' canvases normalised by data.mean/std: (training images, training canvases,
    validation images, validation canvases, the data set's metadata)."""
    from pipeline.data._common import norm_of, normalize

    tr, va = composed_split(data_cfg, size)
    meta = {"name": data_cfg.name, "input_size": size, **norm_of(data_cfg), "train": len(tr.images),
            "val": len(va.images)}
    return normalize(tr.images, data_cfg), tr, normalize(va.images, data_cfg), va, meta


def check_composed(data_cfg) -> list[str]:
    problems = []
    if not 0.0 < float(data_cfg.val_fraction) < 1.0:
        problems.append(f"data.val_fraction: must be between 0 and 1 (exclusive), got {data_cfg.val_fraction}")
    for key in ("train_images", "val_images"):
        if int(data_cfg[key]) < 1:
            problems.append(f"data.{key}: must be >= 1, got {data_cfg[key]}")
    per = list(data_cfg.digits_per_image)
    if len(per) != 2 or not 1 <= per[0] <= per[1]:
        problems.append(f"data.digits_per_image: needs [min, max] with 1 <= min <= max, got {per}")
    ds = list(data_cfg.digit_size)
    if len(ds) != 2 or not 0 < ds[0] <= ds[1] <= 1:
        problems.append(f"data.digit_size: needs [min, max] shares of the canvas with 0 < min <= max <= 1, got {ds}")
    return problems
