"""The task plug-in interface (see pipeline.tasks)."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np


AGREEMENT_NAMES = {"top1_agreement": "top-1 agreement", "map50_agreement": "mAP@.5 agreement",
                   "pixel_agreement": "pixel agreement", "miou_agreement": "mIoU agreement"}


class Task:
    name: str = ""
    metrics: tuple[str, ...] = ()
    higher_is_better: dict[str, bool] = {}
    needs_labels: bool = True
    # Default parity thresholds (parameter name of the parity stage -> bound), applied unless the recipe gives its
    # own value or turns defaults off (stages.parity.task_defaults=false). Each task says why its values.
    parity_thresholds: dict[str, float] = {}

    @property
    def primary(self) -> str | None:
        return self.metrics[0] if self.metrics else None

    def evaluate(self, outputs: Sequence[np.ndarray], labels: Any) -> dict[str, float]:
        """The task metrics of a model's outputs on labelled samples."""
        raise NotImplementedError

    def agreement(self, reference: Sequence[np.ndarray], outputs: Sequence[np.ndarray],
                  labels: Any = None) -> dict[str, float]:
        """How far a model's task-level answers agree with its source's (parity), with no labels needed; with
        labels, also each side's primary metric and the drop (`<metric>_reference`, `<metric>`, `<metric>_drop`)."""
        return {}

    def check_agreement(self, agreement: dict[str, float], thresholds: dict[str, float] | None = None) -> list[str]:
        """Thresholds (`min_<name>` / `max_<name>`) broken by an agreement dict, one sentence each."""
        return self.parity_problems(agreement, {}, thresholds)

    def parity_thresholds_for(self, overrides: dict[str, Any] | None = None, defaults: bool = True) -> dict[str, float]:
        """The thresholds a parity check applies: this task's defaults (unless `defaults` is False), each replaced
        by the recipe's value where it gives one (None = keep the default)."""
        out = dict(self.parity_thresholds) if defaults else {}
        out.update({k: float(v) for k, v in (overrides or {}).items() if v is not None})
        return out

    def parity_problems(self, agreement: dict[str, float], per_output: dict[str, dict[str, float]],
                        thresholds: dict[str, float] | None = None, defaults: bool = True) -> list[str]:
        """Every threshold broken, one sentence each: the task's agreement metrics (`min_top1_agreement` ...) first,
        then each output tensor's cosine / SNR / largest error (`min_cosine`, `min_snr_db`, `max_abs_error`)."""
        from pipeline.library import parity_metrics

        limits = self.parity_thresholds_for(thresholds, defaults)
        out = []
        for key, limit in limits.items():
            kind, _, metric = key.partition("_")
            if key in parity_metrics.OUTPUT_THRESHOLDS or metric not in agreement:
                continue
            v = agreement[metric]
            if (kind == "min" and v < limit) or (kind == "max" and v > limit):
                shown = AGREEMENT_NAMES.get(metric, metric)
                out.append(f"{shown} {v:.4f} {'<' if kind == 'min' else '>'} {key} {limit:g}")
        return out + parity_metrics.violations(per_output, limits.get("min_cosine"), limits.get("min_snr_db"),
                                               limits.get("max_abs_error"))

    def loss(self, outputs, labels, input_size: tuple[int, int] | None = None):
        """Training loss (torch) of a model's outputs on a batch of labels (`take(labels, idx)`)."""
        raise NotImplementedError(f"task {self.name!r} has no labels to train on")

    @staticmethod
    def take(labels: Any, idx) -> Any:
        """The labels of the samples `idx` (arrays are indexed, per-image lists picked), for batching any task."""
        if labels is None:
            return None
        if isinstance(labels, np.ndarray):
            return labels[idx]
        return [labels[int(i)] for i in idx]

    def check_model(self, outputs: Sequence[dict[str, Any]], num_classes: int | None) -> list[str]:
        """Plan-time problems of a model for this task: `outputs` are the signature's output specs
        ({"name", "shape"}), `num_classes` the data's class count. Each problem names both sides and the fix."""
        return []

    def _with_labels(self, reference, outputs, labels) -> dict[str, float]:
        if labels is None or self.primary is None:
            return {}
        ref = self.evaluate(reference, labels)[self.primary]
        got = self.evaluate(outputs, labels)[self.primary]
        return {f"{self.primary}_reference": ref, self.primary: got, f"{self.primary}_drop": ref - got}


def as_list(outputs) -> list[np.ndarray]:
    """A model's outputs as a list of arrays (one array is a one-output model)."""
    if isinstance(outputs, np.ndarray):
        return [outputs]
    if isinstance(outputs, dict):
        return list(outputs.values())
    return list(outputs)
