"""Helpers shared by the task data sets (detection, segmentation, unlabelled images)."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from pipeline.data.files import IMAGE_SUFFIXES


@dataclass
class Dataset:
    """Preprocessed float32 NCHW arrays and their labels (integer classes here; a task data set says what its labels
    are), split once with a fixed seed."""

    train_x: np.ndarray
    train_y: Any
    val_x: np.ndarray
    val_y: Any
    classes: list[str]
    meta: dict[str, Any] = field(default_factory=dict)
    task: str = "classification"

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def refuse(problems: list[str]) -> None:
    """Stop before any image is read when the data section has problems, naming every one of them."""
    if problems:
        raise ValueError("; ".join(problems))


def expand(path: Any) -> Path:
    return Path(os.path.expanduser(str(path)))


def images_under(root: Path, recursive: bool = False) -> list[Path]:
    it = root.rglob("*") if recursive else root.iterdir()
    return sorted(p for p in it if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def check_norm(data_cfg: Any) -> list[str]:
    problems = []
    for key in ("mean", "std"):
        vals = list(data_cfg[key])
        if len(vals) != 3 or not all(isinstance(v, (int, float)) and np.isfinite(v) for v in vals):
            problems.append(f"data.{key}: needs 3 finite numbers (one per RGB channel), got {vals}")
    if not problems and not all(v > 0 for v in data_cfg.std):
        problems.append(f"data.std: every value must be > 0 (the images are divided by it), got {list(data_cfg.std)}")
    return problems


def norm_of(data_cfg: Any) -> dict:
    """The normalisation the images were given (for the data set's meta: an imported model's own preprocessing is
    re-applied from the pixels it recovers)."""
    return {"mean": [float(v) for v in data_cfg.mean], "std": [float(v) for v in data_cfg.std]}


def normalize(x: np.ndarray, data_cfg: Any) -> np.ndarray:
    m = np.asarray(list(data_cfg.mean), np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(list(data_cfg.std), np.float32).reshape(1, -1, 1, 1)
    return ((x - m) / s).astype(np.float32)


RESIZE = ("stretch", "letterbox")
PAD = 114 / 255.0  # letterbox padding grey (the value YOLO-family detectors are trained with)


def letterbox_params(wh: tuple[int, int], size) -> tuple[float, float, float]:
    """(scale, pad_x, pad_y) fitting an image of (width, height) into the input size, aspect kept, centred."""
    from pipeline.data.size import hw

    h, w = hw(size)
    s = min(w / wh[0], h / wh[1])
    return s, (w - wh[0] * s) / 2.0, (h - wh[1] * s) / 2.0


def unletterbox(boxes: np.ndarray, params) -> np.ndarray:
    """Boxes x1 y1 x2 y2 in input pixels back to the original image's pixels (the inverse of a letterbox)."""
    s, px, py = params[:3]
    sy = params[3] if len(params) > 3 else s  # (a stretched image has its own vertical scale)
    return (np.asarray(boxes, np.float32).reshape(-1, 4) - np.array([px, py, px, py], np.float32)) \
        / np.array([s, sy, s, sy], np.float32)


def read_rgb(path: Path, size, resize: str = "stretch") -> tuple[np.ndarray, tuple[int, int]]:
    """One image as float32 [3, H, W] in [0, 1] at the input size (one side or (H, W)) and its original (width,
    height); unreadable files named. resize: stretch to the input size, or letterbox (aspect kept, the rest padded
    grey; detectors trained on letterboxed images expect it)."""
    from PIL import Image, UnidentifiedImageError

    from pipeline.data.size import hw

    h, w = hw(size)
    try:
        with Image.open(path) as im:
            wh = im.size
            im = im.convert("RGB")
            if resize == "letterbox":
                s, px, py = letterbox_params(wh, size)
                nw, nh = max(1, round(wh[0] * s)), max(1, round(wh[1] * s))
                canvas = np.full((3, h, w), PAD, np.float32)
                x0, y0 = int(round(px - 0.5 * (nw - wh[0] * s))), int(round(py - 0.5 * (nh - wh[1] * s)))
                small = np.asarray(im.resize((nw, nh), Image.BILINEAR), np.float32).transpose(2, 0, 1) / 255.0
                canvas[:, y0 : y0 + nh, x0 : x0 + nw] = small[:, : h - y0, : w - x0]
                return canvas, wh
            im = im.resize((w, h), Image.BILINEAR)
            return np.asarray(im, np.float32).transpose(2, 0, 1) / 255.0, wh
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise ValueError(f"cannot read image {path}: {e}. Remove or replace the file, then re-run.") from e


def stratified_split(y: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split: the same share of every class goes to validation, reproducibly."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_val = max(1, int(round(len(idx) * val_fraction)))
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def seeded_split(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a reproducible split: max(1, round(n * val_fraction)) samples held out."""
    idx = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(n * val_fraction)))
    return np.sort(idx[n_val:]), np.sort(idx[:n_val])


def fingerprint_files(settings: tuple, files: Iterable[Path], root: Path | None = None, bundled: bool = False) -> str:
    """Identity of a data set: its settings plus every file's relative path, size and mtime (or, for the bundled
    digits, scikit-learn's version)."""
    h = hashlib.sha256(repr(settings).encode())
    if bundled:
        h.update(metadata.version("scikit-learn").encode())
    for p in files:
        st = p.stat()
        h.update(f"{p.relative_to(root) if root else p}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def settings_of(data_cfg: Any, input_size: int) -> tuple:
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(data_cfg, resolve=True) if not isinstance(data_cfg, dict) else dict(data_cfg)
    return (sorted((k, repr(v)) for k, v in cfg.items()), input_size)
