"""Calibration images drawn from the training split: the same seed gives the same images in every stage and
candidate, so quantizers compared side by side see identical data. Imports numpy only."""
from __future__ import annotations

import numpy as np


def sample(data, n: int, seed: int, stage: str = "<stage>") -> np.ndarray:
    """`n` distinct training images chosen with `seed` (every back end's quantizer calibrates on these)."""
    n_train = len(data.train_x)
    if n > n_train:
        raise ValueError(f"calibration_samples={n} is larger than the training split ({n_train} images); lower "
                         f"stages.{stage}.calibration_samples, or give the training split more images "
                         f"(a smaller data.val_fraction)")
    rng = np.random.default_rng(seed)
    return data.train_x[rng.choice(n_train, n, replace=False)]
