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


def inputs(data, n: int, seed: int, stage: str, fmt: str, meta: dict | None) -> np.ndarray:
    """The calibration images as the model of (fmt, meta) takes them: `sample`, then the model's signature (layout,
    channel order, scale, mean/std, dtype) applied by the same adapter every runtime uses at evaluation, parity,
    benchmark and diagnosis (pipeline.runtimes.adapt_input). Every quantizer calibrates on this."""
    from pipeline import runtimes

    return runtimes.adapt_input(fmt, meta, sample(data, n, seed, stage))


def describe(x: np.ndarray) -> dict:
    """What a quantizer was fed, for the artifact's metadata: shape, dtype and per-channel mean/std (channel axis
    1 for NCHW, the last for NHWC) — enough to see that calibration and evaluation saw the same tensors."""
    x = np.asarray(x)
    axis = 1 if x.ndim == 4 and x.shape[1] in (1, 3, 4) else -1
    other = tuple(i for i in range(x.ndim) if i != (axis % x.ndim))
    f = x.astype(np.float64)
    return {"shape": list(x.shape), "dtype": str(x.dtype), "channel_mean": f.mean(other).round(6).tolist(),
            "channel_std": f.std(other).round(6).tolist(), "min": float(f.min()), "max": float(f.max())}
