"""How an int8 candidate is judged against the model it was made from, for any task. Shared by the measured choice
(select_int8) and the remedy ladder (pipeline.convert.remedies), so that both decide "within budget" the way the
parity stage and the gate do.

Two ways, chosen by what the data holds:
  labels  the task's primary metric (top-1, mAP@[.5:.95], mIoU) of the candidate and of the reference on the same
          labelled images; within budget when the drop is at most `budget_points` (points of that metric)
  parity  no labels (task none) or asked for: the task's agreement with the reference (top-1 agreement, mAP@.5
          against its detections, pixel agreement) and every output's cosine / SNR, held to the parity thresholds
          (the task's defaults and the recipe's overrides, pipeline.tasks.base.Task.parity_problems)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Score:
    passed: bool
    accuracy: float | None = None  # the task's primary metric (labels) or None
    drop_points: float | None = None  # reference - candidate, in points of that metric
    fidelity: dict[str, Any] = field(default_factory=dict)  # parity: agreement + worst cosine / SNR over outputs
    problems: list[str] = field(default_factory=list)  # why not within budget, one sentence each

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "accuracy": self.accuracy, "drop_points": self.drop_points,
                "fidelity": self.fidelity, "problems": self.problems}


class Scorer:
    """Judges candidates' outputs (lists of arrays, the model's order) on images `x` against the reference's."""

    def __init__(self, task, labels=None, budget_points: float = 1.0, thresholds: dict | None = None,
                 task_defaults: bool = True, names: list[str] | None = None):
        self.task, self.budget, self.names = task, float(budget_points), names
        self.labels = labels if (labels is not None and task.needs_labels and task.primary) else None
        self.thresholds, self.task_defaults = dict(thresholds or {}), task_defaults
        self.ref_outputs: list[np.ndarray] | None = None
        self.ref_accuracy: float | None = None

    @property
    def mode(self) -> str:
        return "labels" if self.labels is not None else "parity"

    def describe(self) -> str:
        """The budget in words, for messages and tables."""
        from pipeline import tasks

        if self.mode == "labels":
            return f"{self.budget:g} {tasks.LABELS.get(self.task.primary, self.task.primary)} points below the reference"
        limits = self.task.parity_thresholds_for(self.thresholds, self.task_defaults)
        return "parity with the reference (" + ", ".join(f"{k} {v:g}" for k, v in limits.items()) + ")"

    def reference(self, outputs: list[np.ndarray]) -> None:
        self.ref_outputs = list(outputs)
        if self.mode == "labels":
            self.ref_accuracy = float(self.task.evaluate(self.ref_outputs, self.labels)[self.task.primary])

    def score(self, outputs: list[np.ndarray]) -> Score:
        from pipeline.library import parity_metrics

        if self.ref_outputs is None:
            raise ValueError("Scorer.reference(outputs of the reference model) first")
        outputs = list(outputs)
        names = self.names if self.names and len(self.names) == len(outputs) else None
        per_output = parity_metrics.compare_outputs(self.ref_outputs, outputs, names)
        worst = parity_metrics.worst(per_output)
        # (an identical output's SNR is inf, which JSON cannot hold: None, with the cosine of 1 saying why)
        fidelity = {k: (worst[k] if np.isfinite(worst[k]) else None) for k in ("cosine", "snr_db") if k in worst}
        if self.mode == "labels":
            acc = float(self.task.evaluate(outputs, self.labels)[self.task.primary])
            drop = 100.0 * (self.ref_accuracy - acc)
            problems = [] if drop <= self.budget else [f"loses {drop:.2f} points (budget {self.budget:g})"]
            return Score(not problems, acc, drop, fidelity, problems)
        agreement = self.task.agreement(self.ref_outputs, outputs)
        problems = self.task.parity_problems(agreement, per_output, self.thresholds, self.task_defaults)
        return Score(not problems, None, None, {**fidelity, **agreement}, problems)
