"""Semantic segmentation: per-pixel logits [N, classes, H, W]; mean IoU and pixel accuracy from a confusion matrix
(scikit-learn's), pixels labelled `ignore_index` (255, the usual "void") left out.

mIoU averages the IoU of the classes that occur in the labels or the predictions (a class absent from both has no
IoU; counting it as 0 or 1 would move the mean for nothing), as mmsegmentation and torchmetrics do by default.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.tasks.base import Task, as_list

IGNORE_INDEX = 255


def confusion(pred: np.ndarray, target: np.ndarray, num_classes: int, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """[classes, classes] pixel counts, rows = label, columns = prediction."""
    from sklearn.metrics import confusion_matrix

    pred, target = np.asarray(pred).reshape(-1), np.asarray(target).reshape(-1)
    if pred.shape != target.shape:
        raise ValueError(f"{pred.size} predicted pixels but {target.size} labelled ones: masks and outputs must have "
                         f"the same size (resize the masks to the model's input)")
    keep = target != ignore_index
    bad = np.setdiff1d(np.unique(target[keep]), np.arange(num_classes))
    if bad.size:
        raise ValueError(f"mask values {bad.tolist()} are not classes of a {num_classes}-class model (0..{num_classes - 1}, "
                         f"{ignore_index} = ignore): the model and the masks disagree on the classes")
    return confusion_matrix(target[keep], pred[keep], labels=np.arange(num_classes))


def scores(cm: np.ndarray) -> dict[str, float]:
    tp = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - tp
    present = union > 0
    miou = float((tp[present] / union[present]).mean()) if present.any() else 0.0
    total = cm.sum()
    return {"miou": miou, "pixel_acc": float(tp.sum() / total) if total else 0.0}


class Segmentation(Task):
    name = "segmentation"
    metrics = ("miou", "pixel_acc")
    higher_is_better = {"miou": True, "pixel_acc": True}
    # Disagreement between a segmenter and its source concentrates on object boundaries: a one-pixel band around the
    # objects of a typical mask is 2-3% of the pixels, so 0.97 allows boundary jitter and catches a class that
    # bleeds or vanishes.
    parity_thresholds = {"min_pixel_agreement": 0.97}

    def __init__(self, ignore_index: int = IGNORE_INDEX, **_: Any):
        self.ignore_index = ignore_index

    @staticmethod
    def logits(outputs) -> np.ndarray:
        outs = as_list(outputs)
        x = np.asarray(outs[0])
        if x.ndim != 4:
            raise ValueError(f"a segmenter's first output is per-pixel logits [N, classes, H, W]; this model gives "
                             f"shape {list(x.shape)}")
        return x

    def predict(self, outputs) -> np.ndarray:
        return self.logits(outputs).argmax(1)

    def evaluate(self, outputs, labels) -> dict[str, float]:
        x = self.logits(outputs)
        return scores(confusion(x.argmax(1), labels, x.shape[1], self.ignore_index))

    def agreement(self, reference, outputs, labels=None) -> dict[str, float]:
        r, g = self.logits(reference), self.logits(outputs)
        pr, pg = r.argmax(1), g.argmax(1)
        return {"pixel_agreement": float((pr == pg).mean()),
                "miou_agreement": scores(confusion(pg, pr, r.shape[1], self.ignore_index))["miou"],
                **self._with_labels(r, g, labels)}

    def loss(self, outputs, labels, input_size=None):
        """Per-pixel cross-entropy, ignore_index pixels left out (torch)."""
        import torch
        import torch.nn.functional as F

        logits = outputs[0] if isinstance(outputs, (list, tuple)) else outputs
        target = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        return F.cross_entropy(logits, target, ignore_index=self.ignore_index)

    def check_model(self, outputs, num_classes):
        shape = (outputs[0].get("shape") if outputs else None) or []
        if len(shape) != 4:
            return [f"task segmentation expects per-pixel logits (batch, classes, H, W); the model gives "
                    f"{[o.get('shape') for o in outputs]}: choose the task that fits the model"]
        if num_classes is not None and isinstance(shape[1], int) and shape[1] != num_classes:
            return [f"the segmenter predicts {shape[1]} classes but the masks have {num_classes}: retrain its head "
                    f"or give data.classes matching the model"]
        return []
