"""Datasets: scikit-learn's bundled digits (the offline default) and a folder of images per class.

`check` and `fingerprint` are cheap and import nothing heavy (they run while planning); `load` builds arrays.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data.files import IMAGE_SUFFIXES, _class_dirs, _images

DATASETS = ("digits", "imagefolder")
# Images per class of scikit-learn's bundled digits (unchanged since it shipped): planning knows the split sizes from
# these without importing scikit-learn. tests/reliability/test_bad_inputs.py checks them against load_digits().
DIGITS_PER_CLASS = (178, 182, 177, 183, 181, 182, 181, 179, 174, 180)


@dataclass
class Dataset:
    """Preprocessed float32 NCHW arrays and integer labels, split once with a fixed seed."""

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    classes: list[str]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def check(data_cfg: Any) -> list[str]:
    """Problems with the data configuration, each naming the fix. Cheap: lists folders, opens no image."""
    if data_cfg.name not in DATASETS:
        return [f"data.name: unknown dataset {data_cfg.name!r}. Available: {', '.join(DATASETS)} "
                f"(choose with data=digits or data=imagefolder data.path=DIR)."]
    if not 0.0 < data_cfg.val_fraction < 1.0:
        return [f"data.val_fraction: must be between 0 and 1 (exclusive), got {data_cfg.val_fraction}"]
    problems = []
    for key in ("mean", "std"):  # the images are RGB: one value per channel
        vals = list(data_cfg[key])
        if len(vals) != 3 or not all(isinstance(v, (int, float)) and np.isfinite(v) for v in vals):
            problems.append(f"data.{key}: needs 3 finite numbers (one per RGB channel), got {vals}")
    if not problems and not all(v > 0 for v in data_cfg.std):
        problems.append(f"data.std: every value must be > 0 (the images are divided by it), got {list(data_cfg.std)}")
    if data_cfg.max_per_class is not None and data_cfg.max_per_class < 2:
        problems.append(f"data.max_per_class: must be at least 2 (one image to train on, one to validate) or null "
                        f"for no cap, got {data_cfg.max_per_class}")
    if problems or data_cfg.name != "imagefolder":
        return problems
    if not data_cfg.path:
        return ["data.path: data=imagefolder needs a folder: add data.path=DIR (one sub-folder of images per class)"]
    root = Path(os.path.expanduser(str(data_cfg.path)))
    if not root.is_dir():
        return [f"data.path: {str(root)!r} does not exist or is not a folder; give a folder with one sub-folder of "
                f"images per class"]
    classes = _class_dirs(root)
    if len(classes) < 2:
        return [f"data.path: {str(root)!r} has {len(classes)} class folder(s); a classifier needs at least 2 "
                f"sub-folders of images (one per class)"]
    empty = [c.name for c in classes if not _images(c)]
    if empty:
        return [f"data.path: class folder(s) {', '.join(empty)} in {str(root)!r} hold no images "
                f"({', '.join(sorted(IMAGE_SUFFIXES))}); add images or remove the folder"]
    single = [c.name for c in classes if len(_images(c)) < 2]
    if single:
        return [f"data.path: class folder(s) {', '.join(single)} in {str(root)!r} hold only one image; each class "
                f"needs at least 2 (one to train on, one to validate): add images or remove the folder"]
    return []


def class_counts(data_cfg: Any) -> list[int]:
    """Images per class as `load` will see them (after max_per_class). Cheap: lists folders, decodes nothing."""
    if data_cfg.name == "digits":
        return list(DIGITS_PER_CLASS)
    root = Path(os.path.expanduser(str(data_cfg.path)))
    cap = data_cfg.max_per_class
    return [min(len(_images(c)), cap) if cap else len(_images(c)) for c in _class_dirs(root)]


def split_sizes(data_cfg: Any) -> tuple[int, int] | None:
    """(training, validation) image counts of the seeded split, known before loading; None if `check` finds problems.

    Mirrors `_split`: every class gives max(1, round(n * val_fraction)) images to validation.
    """
    if check(data_cfg):
        return None
    train = val = 0
    for n in class_counts(data_cfg):
        n_val = max(1, int(round(n * data_cfg.val_fraction)))
        train, val = train + n - n_val, val + n_val
    return train, val


def fingerprint(data_cfg: Any, input_size: int) -> str:
    """Identity of the data a stage sees: the dataset's settings plus its content.

    Digits: scikit-learn's version (the data ships with it). Folders: every image's relative path, size and mtime
    (reading every byte of a large folder on each run would cost more than the stages it saves).
    """
    h = hashlib.sha256()
    h.update(repr((data_cfg.name, data_cfg.val_fraction, data_cfg.seed, list(data_cfg.mean), list(data_cfg.std),
                   data_cfg.max_per_class, input_size)).encode())
    if data_cfg.name == "digits":
        h.update(metadata.version("scikit-learn").encode())
    else:
        root = Path(os.path.expanduser(str(data_cfg.path)))
        for c in _class_dirs(root):
            for p in _images(c):
                st = p.stat()
                h.update(f"{c.name}/{p.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _split(y: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split: the same share of every class goes to validation, reproducibly."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_val = max(1, int(round(len(idx) * val_fraction)))
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def _normalize(x: np.ndarray, mean, std) -> np.ndarray:
    m = np.asarray(mean, np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(std, np.float32).reshape(1, -1, 1, 1)
    return ((x - m) / s).astype(np.float32)


def load(data_cfg: Any, input_size: int) -> Dataset:
    """Load and preprocess: resize to the model's input, 3 channels, normalise with data.mean/std."""
    from PIL import Image

    if data_cfg.name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        raw = (d.images / 16.0).astype(np.float32)
        imgs = np.stack([np.asarray(Image.fromarray(im, mode="F").resize((input_size, input_size), Image.BILINEAR))
                         for im in raw])
        x = np.repeat(imgs[:, None], 3, axis=1)
        y = d.target.astype(np.int64)
        classes = [str(c) for c in d.target_names]
    else:
        from pipeline.data.imagefolder import read_folder

        x, y, classes = read_folder(Path(os.path.expanduser(str(data_cfg.path))), input_size, data_cfg.max_per_class)
    x = _normalize(x, data_cfg.mean, data_cfg.std)
    tr, va = _split(y, data_cfg.val_fraction, data_cfg.seed)
    return Dataset(x[tr], y[tr], x[va], y[va], classes,
                   meta={"name": data_cfg.name, "input_size": input_size, "train": len(tr), "val": len(va)})
