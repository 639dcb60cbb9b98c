"""Image classification: one output of logits [N, classes]; top-1 and top-5 accuracy, top-1 agreement for parity."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from pipeline.tasks.base import Task, as_list


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Share of samples whose label is among the k highest logits (k capped at the class count). Two numpy lines:
    sklearn's top_k_accuracy_score treats two classes as a binary problem with one score column, which logits are not."""
    k = min(k, logits.shape[1])
    top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return float((top == np.asarray(labels).reshape(-1, 1)).any(1).mean())


class Classification(Task):
    name = "classification"
    metrics = ("top1", "top5")
    higher_is_better = {"top1": True, "top5": True}
    # Flips between a model and its source sit on images near a decision boundary, about half of which the source had
    # right: 3% flipped costs roughly 1-1.5 top-1 points, the size of the default accuracy budget
    # (gate.max_accuracy_drop = 1 point). Tighter flags harmless int8 noise on uncertain images; looser lets a 2-3
    # point loss pass as "faithful".
    parity_thresholds = {"min_top1_agreement": 0.97}

    def __init__(self, **_: Any):
        pass

    @staticmethod
    def logits(outputs) -> np.ndarray:
        outs = as_list(outputs)
        if len(outs) != 1:
            raise ValueError(f"a classifier has one output (logits [N, classes]); this model has {len(outs)}: set "
                             f"task=detection/segmentation/none, or give the model's logits output only")
        x = np.asarray(outs[0], np.float32)
        if x.ndim != 2:
            raise ValueError(f"a classifier's output is logits [N, classes]; this model gives shape {list(x.shape)}: "
                             f"choose the task that fits the model (task=segmentation for [N, classes, H, W], "
                             f"task=none to only calibrate, compare and benchmark it)")
        return x

    def evaluate(self, outputs, labels) -> dict[str, float]:
        x = self.logits(outputs)
        y = np.asarray(labels).astype(np.int64).reshape(-1)
        if len(y) != len(x):
            raise ValueError(f"{len(x)} predictions but {len(y)} labels")
        if y.size and y.max() >= x.shape[1]:
            raise ValueError(f"label {int(y.max())} is out of range for a model with {x.shape[1]} classes: the model "
                             f"and the data disagree on the classes")
        return {"top1": topk_accuracy(x, y, 1), "top5": topk_accuracy(x, y, 5)}

    def agreement(self, reference, outputs, labels=None) -> dict[str, float]:
        r, g = self.logits(reference), self.logits(outputs)
        return {"top1_agreement": float((r.argmax(1) == g.argmax(1)).mean()), **self._with_labels(r, g, labels)}

    def loss(self, outputs, labels, input_size=None):
        """Cross-entropy of the logits (torch)."""
        import torch
        import torch.nn.functional as F

        logits = outputs[0] if isinstance(outputs, (list, tuple)) else outputs
        return F.cross_entropy(logits, torch.as_tensor(np.asarray(labels), dtype=torch.long))

    def check_model(self, outputs: Sequence[dict[str, Any]], num_classes: int | None) -> list[str]:
        if len(outputs) != 1 or len(outputs[0].get("shape") or []) != 2:
            shapes = [o.get("shape") for o in outputs]
            return [f"task classification expects one output of logits (batch, classes); the model gives {shapes}: "
                    f"set task=detection, segmentation or none to match the model"]
        classes = outputs[0]["shape"][-1]
        if num_classes is not None and isinstance(classes, int) and classes > 0 and classes != num_classes:
            return [f"the model predicts {classes} classes but the data has {num_classes}: fine-tune it with a new "
                    f"head (a stage {{type: train, inputs: [<the import stage>]}} rebuilds the head for {num_classes} "
                    f"classes) or use data with the model's {classes} classes"]
        return []
