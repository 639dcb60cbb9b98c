"""A plain folder of images (searched recursively) for task=none: calibration, parity, benchmark and profile need
images but no labels. A seeded share (data.val_fraction) is held out as the parity/evaluation set."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.data._common import (check_norm, expand, fingerprint_files, images_under, norm_of, normalize, read_rgb,
                                   refuse, seeded_split, settings_of)

NAMES = ("images",)


@dataclass
class UnlabelledDataset:
    """float32 NCHW images and no labels (train_y / val_y are None)."""

    train_x: np.ndarray
    val_x: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    train_y: None = None
    val_y: None = None
    classes: list[str] = field(default_factory=list)
    task: str = "none"

    @property
    def num_classes(self) -> int:
        return 0


def check(data_cfg: Any) -> list[str]:
    if data_cfg.name not in NAMES:
        return [f"data.name: {data_cfg.name!r} is not an unlabelled image set; use data=images data.path=DIR"]
    problems = check_norm(data_cfg)
    if not 0.0 < float(data_cfg.val_fraction) < 1.0:
        problems.append(f"data.val_fraction: must be between 0 and 1 (exclusive), got {data_cfg.val_fraction}")
    if not data_cfg.get("path"):
        return problems + ["data.path: data=images needs a folder of images: add data.path=DIR"]
    root = expand(data_cfg.path)
    if not root.is_dir():
        return problems + [f"data.path: {str(root)!r} does not exist or is not a folder"]
    n = len(images_under(root, recursive=True))
    if n < 2:
        problems.append(f"data.path: {str(root)!r} holds {n} image(s); at least 2 are needed (calibration and a "
                        f"held-out set)")
    return problems


def fingerprint(data_cfg: Any, input_size: int) -> str:
    root = expand(data_cfg.path)
    return fingerprint_files(settings_of(data_cfg, input_size), images_under(root, recursive=True), root)


def load(data_cfg: Any, input_size: int) -> UnlabelledDataset:
    refuse(check(data_cfg))
    files = images_under(expand(data_cfg.path), recursive=True)[: data_cfg.get("max_images") or None]
    x = normalize(np.stack([read_rgb(f, input_size)[0] for f in files]), data_cfg)
    tr, va = seeded_split(len(x), float(data_cfg.val_fraction), int(data_cfg.seed))
    return UnlabelledDataset(x[tr], x[va], meta={"name": data_cfg.name, "input_size": input_size, **norm_of(data_cfg), "train": len(tr),
                                                 "val": len(va)})
