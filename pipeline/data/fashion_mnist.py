"""Fashion-MNIST (Zalando, 2017): 70,000 real labelled 28x28 grayscale photos of clothes in 10 classes, read from the
IDX files Debian's `dataset-fashion-mnist` installs (/usr/share/datasets/fashion-mnist; `make system-deps` or
`apt-get install dataset-fashion-mnist`). Nothing is downloaded.

The data set's own split is kept: training images come from its 60,000-image training file, validation images from
its 10,000-image test file, so the validation split is images no stage ever trains or calibrates on. Both are drawn
per class with a seeded generator: `data.max_per_class` training images per class, `data.val_images` validation
images in all (stratified); the arrays are float32 at the model's input size, so these caps are what keeps memory in
check (at 128 px an image takes 192 KB). Images are upsampled bilinearly and repeated to three channels, then
normalised with data.mean / data.std (ImageNet's statistics by default, what pretrained models expect).
"""
from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data._common import (Dataset, check_norm, expand, fingerprint_files, norm_of, normalize, refuse,
                                   settings_of)

NAMES = ("fashion_mnist",)
CLASSES = ["t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]
FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
         "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
PER_CLASS = {"train": 6000, "test": 1000}  # images per class in each file
DEFAULT_PATH = "/usr/share/datasets/fashion-mnist"


def _root(data_cfg: Any) -> Path:
    return expand(data_cfg.get("path") or DEFAULT_PATH)


def check(data_cfg: Any) -> list[str]:
    """Missing files and caps beyond what the files hold, each with the fix."""
    problems = check_norm(data_cfg)
    root = _root(data_cfg)
    missing = [f for pair in FILES.values() for f in pair if not (root / f).is_file()]
    if missing:
        problems.append(f"data.path: {str(root)!r} lacks {', '.join(missing)}: install Debian's dataset-fashion-mnist "
                        f"(make system-deps, or apt-get install dataset-fashion-mnist), or point data.path at a folder "
                        f"holding the four IDX files")
    cap = data_cfg.get("max_per_class")
    if cap is not None and not 1 <= int(cap) <= PER_CLASS["train"]:
        problems.append(f"data.max_per_class: the training file holds {PER_CLASS['train']} images per class; give "
                        f"1-{PER_CLASS['train']} or null for all, got {cap}")
    val = data_cfg.get("val_images")
    if val is not None and not 10 <= int(val) <= 10 * PER_CLASS["test"]:
        problems.append(f"data.val_images: the test file holds {10 * PER_CLASS['test']} images; give 10-"
                        f"{10 * PER_CLASS['test']} (at least one per class) or null for all, got {val}")
    return problems


def split_sizes(data_cfg: Any) -> tuple[int, int]:
    cap, val = data_cfg.get("max_per_class"), data_cfg.get("val_images")
    train = 10 * (int(cap) if cap else PER_CLASS["train"])
    return train, (10 * (int(val) // 10) if val else 10 * PER_CLASS["test"])


def fingerprint(data_cfg: Any, input_size: int) -> str:
    root = _root(data_cfg)
    return fingerprint_files(settings_of(data_cfg, input_size), [root / f for pair in FILES.values() for f in pair],
                             root)


def _read(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = FILES[split]
    with gzip.open(root / images) as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(root / labels) as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8).astype(np.int64)
    return x, y


def _per_class(y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n indices of every class, drawn without replacement, sorted."""
    return np.sort(np.concatenate([rng.choice(np.flatnonzero(y == c), n, replace=False) for c in range(len(CLASSES))]))


def _to_model_input(images: np.ndarray, size: int, data_cfg: Any) -> np.ndarray:
    """uint8 28x28 -> float32 [N, 3, size, size], normalised; built in chunks so that only the result is large."""
    from PIL import Image

    out = np.empty((len(images), 3, size, size), np.float32)
    for i in range(0, len(images), 512):
        chunk = np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BILINEAR), np.float32)
                          for im in images[i : i + 512]]) / 255.0
        out[i : i + 512] = normalize(np.repeat(chunk[:, None], 3, axis=1), data_cfg)
    return out


def load(data_cfg: Any, input_size: int) -> Dataset:
    refuse(check(data_cfg))
    root, seed = _root(data_cfg), int(data_cfg.seed)
    tx, ty = _read(root, "train")
    vx, vy = _read(root, "test")
    cap, val = data_cfg.get("max_per_class"), data_cfg.get("val_images")
    tr = _per_class(ty, int(cap), np.random.default_rng(seed)) if cap else np.arange(len(ty))
    va = _per_class(vy, int(val) // 10, np.random.default_rng(seed + 1)) if val else np.arange(len(vy))
    meta = {"name": "fashion_mnist", "input_size": input_size, **norm_of(data_cfg), "train": len(tr), "val": len(va),
            "source": str(root), "split": "training images from the training file, validation from the test file"}
    return Dataset(_to_model_input(tx[tr], input_size, data_cfg), ty[tr],
                          _to_model_input(vx[va], input_size, data_cfg), vy[va], list(CLASSES), meta)
