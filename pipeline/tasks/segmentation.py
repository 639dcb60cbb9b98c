"""Semantic segmentation: per-pixel scores; mean IoU and pixel accuracy from a confusion matrix (scikit-learn's),
pixels labelled `ignore_index` (255, the usual "void") left out.

The head's layout is read from its shape: [N, classes, H, W] (PyTorch), [N, H, W, classes] (TFLite/Keras, NHWC), and
the binary head most edge, matting and foreground models have: one channel ([N, 1, H, W], [N, H, W, 1] or [N, H, W])
of a sigmoid (values in [0, 1], foreground above 0.5) or of its logit (foreground above 0), scored as two classes
(0 = background, 1 = foreground). A one-channel layout is unambiguous; a multi-channel one is NHWC when its last
axis, and not its second, holds the class count.

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

    def __init__(self, ignore_index: int = IGNORE_INDEX, num_classes: int | None = None, **_: Any):
        self.ignore_index = ignore_index
        self.num_classes = num_classes

    @staticmethod
    def layout(shape, num_classes: int | None = None) -> tuple[str, int] | None:
        """(NCHW | NHWC | NHW, channels) of a head's output shape, or None when it is no per-pixel map."""
        shape = list(shape)
        if len(shape) == 3:
            return "NHW", 1
        if len(shape) != 4:
            return None
        c1, c3 = shape[1], shape[3]
        if c3 == 1 and c1 != 1:
            return "NHWC", 1
        if num_classes and c3 == num_classes and c1 != num_classes:
            return "NHWC", c3
        if num_classes is None and isinstance(c3, int) and isinstance(c1, int) and 1 < c3 < 8 < c1:
            return "NHWC", c3  # a handful of classes last, a spatial size second
        return "NCHW", c1

    def logits(self, outputs) -> np.ndarray:
        """The first output as [N, channels, H, W] whatever the head's layout."""
        x = np.asarray(as_list(outputs)[0])
        found = self.layout(x.shape, self.num_classes)
        if found is None:
            raise ValueError(f"a segmenter's first output is a per-pixel map ([N, classes, H, W], [N, H, W, classes] "
                             f"or a one-channel [N, H, W]); this model gives shape {list(x.shape)}")
        kind = found[0]
        return x[:, None] if kind == "NHW" else x.transpose(0, 3, 1, 2) if kind == "NHWC" else x

    def predict(self, outputs) -> np.ndarray:
        x = self.logits(outputs)
        if x.shape[1] == 1:  # binary: a sigmoid's probability, or its logit
            p = x[:, 0]
            return (p > (0.5 if p.min() >= 0 and p.max() <= 1 else 0.0)).astype(np.int64)
        return x.argmax(1)

    def classes(self, outputs) -> int:
        return max(2, self.logits(outputs).shape[1])

    def evaluate(self, outputs, labels) -> dict[str, float]:
        return scores(confusion(self.predict(outputs), labels, self.classes(outputs), self.ignore_index))

    def agreement(self, reference, outputs, labels=None) -> dict[str, float]:
        pr, pg = self.predict(reference), self.predict(outputs)
        return {"pixel_agreement": float((pr == pg).mean()),
                "miou_agreement": scores(confusion(pg, pr, self.classes(reference), self.ignore_index))["miou"],
                **self._with_labels(reference, outputs, labels)}

    def loss(self, outputs, labels, input_size=None):
        """Per-pixel cross-entropy, ignore_index pixels left out (torch)."""
        import torch
        import torch.nn.functional as F

        logits = outputs[0] if isinstance(outputs, (list, tuple)) else outputs
        target = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        return F.cross_entropy(logits, target, ignore_index=self.ignore_index)

    def check_model(self, outputs, num_classes):
        shape = (outputs[0].get("shape") if outputs else None) or []
        found = self.layout(shape, num_classes)
        if found is None:
            return [f"task segmentation expects a per-pixel map ((batch, classes, H, W), (batch, H, W, classes) or one "
                    f"channel (batch, H, W)); the model gives {[o.get('shape') for o in outputs]}: choose the task "
                    f"that fits the model"]
        channels = found[1]
        if num_classes is None or not isinstance(channels, int) or channels <= 0:
            return []
        if channels == 1 and num_classes != 2:
            return [f"the segmenter has one (binary, foreground/background) channel but the masks have {num_classes} "
                    f"classes: give masks of two classes (0 = background, 1 = foreground; data.classes=[background,"
                    f"foreground]) or a head with {num_classes} channels"]
        if channels != 1 and channels != num_classes:
            return [f"the segmenter predicts {channels} classes but the masks have {num_classes}: retrain its head "
                    f"or give data.classes matching the model"]
        return []
