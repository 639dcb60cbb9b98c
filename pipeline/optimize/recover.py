"""Winning accuracy back after pruning: knowledge distillation from the unmodified model (Hinton et al. 2015), and
quantization-aware training with the same loss when post-training int8 misses the budget.

loss = alpha * T^2 * KL(student / T || teacher / T) + (1 - alpha) * cross-entropy(labels)

The teacher's logits are computed once per training image and handed to the training loop packed beside the labels
(column 0 the label, the rest the teacher's logits): pipeline.training.fit shows its loss function only the batch, and
running the teacher on every batch of every trial would cost more than training the pruned student. Because those
logits belong to the unshifted images, distillation trains without random shifts.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Recipe:
    """How a pruned model is fine-tuned (part of every cached step's key)."""

    epochs: int
    lr: float
    batch_size: int = 64
    temperature: float = 4.0
    alpha: float = 0.7
    weight_decay: float = 1e-4
    threads: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The recipe as a cache key holds it: without `threads`, which changes only the rounding of the sums."""
        return {k: v for k, v in self.__dict__.items() if k != "threads"}


def teacher_logits(teacher, x: np.ndarray, batch_size: int = 128) -> np.ndarray:
    import torch

    teacher.eval()
    with torch.inference_mode():
        return np.concatenate([teacher(torch.from_numpy(x[i : i + batch_size])).numpy()
                               for i in range(0, len(x), batch_size)]).astype(np.float32)


def packed(split, logits: np.ndarray) -> SimpleNamespace:
    """The training split with [label | teacher logits] as its targets, the search split as its validation set (what
    fit's per-epoch line reports; the validation split is never looked at while searching)."""
    y = np.concatenate([split.train_y[:, None].astype(np.float32), logits], axis=1)
    return SimpleNamespace(train_x=split.train_x, train_y=y, val_x=split.search_x, val_y=split.search_y)


def subset(data: SimpleNamespace, n: int | None, seed: int) -> SimpleNamespace:
    """At most n training images of `packed` data, the same share of every class (seeded): a trial's short fine-tune
    need not see every image to rank against the others."""
    if not n or n >= len(data.train_x):
        return data
    from pipeline.data._common import stratified_split

    labels = data.train_y[:, 0].astype(np.int64)
    _, keep = stratified_split(labels, n / len(labels), seed + 29)
    return SimpleNamespace(train_x=data.train_x[keep], train_y=data.train_y[keep], val_x=data.val_x, val_y=data.val_y)


def kd_loss(r: Recipe):
    import torch.nn.functional as F

    T, alpha = float(r.temperature), float(r.alpha)

    def loss(logits, xb, yb):
        labels, soft = yb[:, 0].long(), yb[:, 1:]
        kl = F.kl_div(F.log_softmax(logits / T, dim=1), F.log_softmax(soft / T, dim=1), reduction="batchmean",
                      log_target=True)
        return alpha * T * T * kl + (1 - alpha) * F.cross_entropy(logits, labels)

    return loss


class _Quiet:
    """The training loop's lines (threads, each epoch) go to pipeline.log only: the search prints one line per trial."""

    def __init__(self, log):
        self._log = log

    def info(self, *args, **kw):
        self._log.debug(*args, **kw)

    def __getattr__(self, name):
        return getattr(self._log, name)


def finetune(model, data, r: Recipe, seed: int, log) -> list[dict]:
    """Distil into `model` in place for r.epochs; `data` from `packed`. Returns fit's per-epoch history."""
    import torch
    from tqdm.auto import tqdm

    from pipeline.library import training

    if r.epochs <= 0:
        return []
    torch.manual_seed(seed)
    cfg = training.TrainConfig(epochs=r.epochs, batch_size=r.batch_size, lr=r.lr, weight_decay=r.weight_decay,
                               label_smoothing=0.0, augment=False, threads=r.threads)
    return training.fit(model, data, cfg, seed, _Quiet(log), tqdm, loss_fn=kd_loss(r))["history"]


def qat(model, input_shape, data, r: Recipe, seed: int, log):
    """Quantization-aware distillation: batch norms folded, fake quantizers inserted (PT2E, per-channel int8 weights),
    fine-tuned with the distillation loss. Returns (the prepared graph, the quantizer, fit's history)."""
    import copy
    import warnings

    from pipeline import models
    from pipeline.convert.qat import prepare_qat

    folded = copy.deepcopy(model).eval()
    models.fold_batchnorm(folded)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared, quantizer = prepare_qat(folded, input_shape, per_channel=True)
        history = finetune(prepared, data, r, seed, log)
    return prepared, quantizer, history


def accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    from pipeline.library.training import accuracy as top1

    return top1(model, x, y)


def probe_threads(model, input_shape, batch_size: int, log) -> int:
    """Training threads measured once on real steps of `model` (pipeline.library.threads), for every fine-tune of the search:
    the training loop's own probe would run again for each of dozens of short fine-tunes."""
    import copy

    import torch

    from pipeline.library import threads as threads_mod
    from pipeline.core.host import host_threads

    student = copy.deepcopy(model).train()
    for p in student.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(student.parameters(), lr=1e-4)
    x = torch.randn(batch_size, *list(input_shape)[1:], generator=torch.Generator().manual_seed(0))

    def step():
        opt.zero_grad(set_to_none=True)
        student(x).float().pow(2).mean().backward()
        opt.step()

    choice = threads_mod.resolve(0, step=step, host_cores=host_threads(0))
    log.info("fine-tuning threads: %s", choice.describe())
    return int(choice.threads)
