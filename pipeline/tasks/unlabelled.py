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
    # With no task to say what matters, every output must stay close to its source's. SNR 20 dB is an error whose
    # RMS is 10% of the signal's; cosine 0.99 is the same order (an angle of 8 degrees). A well-calibrated int8 model
    # keeps 25-35 dB at its outputs; a face detector's score map at 7.9 dB (error RMS 40%) had lost 11 of 121 faces.
    parity_thresholds = {"min_cosine": 0.99, "min_snr_db": 20.0}

    def __init__(self, **_: Any):
        pass

    def evaluate(self, outputs, labels=None) -> dict[str, float]:
        return {}

    def agreement(self, reference, outputs, labels=None) -> dict[str, float]:
        return {}
