"""What a model must beat to be worth anything: the chance level of its task's primary metric. The registry refuses to
make a champion (or even a version) of a model at or below it. Imports nothing heavy.

  classification  1 / classes: what guessing (or always answering one class) scores on balanced data. A measured
                  top-1 beats it only when the lower end of its one-sided 95% Wilson interval over the n validation
                  images is above it, so that 12% on 50 images of 10 classes is not called better than guessing.
  segmentation    1 / classes: the mIoU a constant prediction reaches at most (one class's IoU, the others 0).
  detection       a stated floor, DETECTION_FLOOR mAP: a detector that guesses boxes scores about 0, and below this
                  its boxes are not worth deploying; the interval rule does not apply (mAP is not a proportion).
`registry.min_score` replaces the floor of any task.
"""
from __future__ import annotations

import math

DETECTION_FLOOR = 0.05  # mAP@[.5:.95]
Z_95_ONE_SIDED = 1.6449


def floor(task: str, classes: int | None, min_score: float | None = None) -> tuple[float, str] | None:
    """(the value to beat, where it comes from in words), or None when it cannot be known (no class count)."""
    if min_score is not None:
        return float(min_score), f"registry.min_score={min_score:g}"
    if task == "detection":
        return DETECTION_FLOOR, f"the floor for a detector, mAP {DETECTION_FLOOR:g}"
    if task in ("classification", "segmentation") and classes and classes > 0:
        what = "guessing" if task == "classification" else "a constant prediction"
        return 1.0 / classes, f"{what} among {classes} classes scores {1.0 / classes:.1%}"
    return None


def wilson_lower(p: float, n: int, z: float = Z_95_ONE_SIDED) -> float:
    """Lower end of the Wilson score interval of a proportion p measured on n samples."""
    denom = 1 + z * z / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - spread) / denom


def beats(task: str, value: float, threshold: float, samples: int | None, stated: bool = False) -> bool:
    """Whether `value` of the task's primary metric is above `threshold`: beyond sampling noise for a classifier's
    top-1 over `samples` images (when known and the threshold is chance, not a stated floor), plainly otherwise."""
    if task == "classification" and samples and not stated:
        return wilson_lower(value, int(samples)) > threshold
    return value > threshold
