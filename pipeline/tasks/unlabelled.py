"""`none`: a model with no labels to score it (a feature extractor, an embedding, a model whose outputs only its
app understands). Calibration, per-output parity, benchmark and profile still run; there is no task metric."""
from __future__ import annotations

from typing import Any

from pipeline.tasks.base import Task


class NoTask(Task):
    name = "none"
    metrics = ()
    higher_is_better = {}
    needs_labels = False
    parity_thresholds = {}

    def __init__(self, **_: Any):
        pass

    def evaluate(self, outputs, labels=None) -> dict[str, float]:
        return {}

    def agreement(self, reference, outputs, labels=None) -> dict[str, float]:
        return {}
