"""Training loops and the helpers of the fine-tuning stages (train, prune, distill, qat, fuse). A library: stages
call these functions; frameworks are imported inside them, so importing this module stays cheap."""
from __future__ import annotations

import gzip
import math
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from pipeline.library import threads as threads_mod
from pipeline.core.bounds import NonNegative, NonNegativeInt, Positive, PositiveInt, at_least, between, one_of

OPTIMIZERS = ("adamw", "sgd")


@dataclass
class TrainConfig:
    epochs: PositiveInt = 10  # passes over the training split
    batch_size: PositiveInt = 64
    lr: Positive = 0.003  # peak learning rate (one-cycle schedule)
    weight_decay: NonNegative = 1e-4
    optimizer: one_of(*OPTIMIZERS) = "adamw"
    label_smoothing: between(0, 1, hi_open=True) = 0.1
    augment: bool = True  # random shifts: pad by 1/8 of the input and crop back at a random offset
    threads: at_least(0, integer=True, note="0 = measured") = 0  # CPU threads; 0 = the fastest of 1..cores on real steps


def check_training(p: Any, min_epochs: int = 1, min_batch: int = 1) -> list[str]:
    """The training knobs' checks, shared by the train stage and the fine-tuning stages."""
    problems = []
    if p.epochs < min_epochs:
        problems.append(f"epochs must be >= {min_epochs}, got {p.epochs}")
    if p.batch_size < min_batch:
        why = " (batch norm trains on batches)" if min_batch > 1 else ""
        problems.append(f"batch_size must be >= {min_batch}{why}, got {p.batch_size}")
    return problems


def train_zoo_model(spec: dict, data, p: TrainConfig, seed: int, log, task=None) -> tuple[Any, dict]:
    """Build the zoo model `spec` names and train it from scratch; returns (model, fit's result). `task`: a
    pipeline.tasks plug-in other than classification trains with its own loss and is scored by its own metric."""
    import torch
    from tqdm.auto import tqdm

    from pipeline import models

    torch.manual_seed(seed)
    model = models.build(spec["name"], spec["num_classes"], **spec["kwargs"])
    return model, train_for_task(model, data, p, seed, log, task, tqdm)


def train_for_task(model, data, p: TrainConfig, seed: int, log, task=None, tqdm=None) -> dict:
    """fit() for a classifier, fit_task() for a detector or segmenter (or any task with its own loss)."""
    if tqdm is None:
        from tqdm.auto import tqdm
    if task is None or task.name == "classification":
        return fit(model, data, p, seed, log, tqdm)
    return fit_task(model, data, p, seed, log, task, tqdm)


def finetune_from(artifact, num_classes: int, stage_name: str, log) -> tuple[Any, dict, dict]:
    """An upstream PyTorch model ready to be trained on data with `num_classes` classes: its last layer replaced by a
    new one when the counts differ (a pretrained 1000-class network fine-tuned on a 5-class folder). Returns (model,
    the spec to save it with, facts about what changed)."""
    from pipeline import models

    model, spec = load_rebuildable(artifact, stage_name)
    before = artifact.meta.get("num_classes")
    facts: dict[str, Any] = {"init_from": artifact.stage, "source_classes": before}
    if before is not None and int(before) != int(num_classes):
        layer, had = models.replace_head(model, int(num_classes))
        reference = models.build_from_spec(base_spec(spec))
        spec = {**spec, "resized": models.resized_layers(model, reference)}
        facts.update(head_replaced=layer, head_classes=[had, int(num_classes)])
        log.info("%s: fine-tuning %r with a new head %r: %d -> %d classes", stage_name, artifact.stage, layer, had,
                 num_classes)
    return model, spec, facts


def _optimizer(model, p, steps_per_epoch: int):
    """SGD (Nesterov, momentum 0.9) or AdamW, under a one-cycle schedule over all of the run's steps."""
    import torch

    if p.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=p.lr, momentum=0.9, weight_decay=p.weight_decay, nesterov=True)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    return opt, torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=p.lr, total_steps=p.epochs * steps_per_epoch)


def fit_task(model, data, p: TrainConfig, seed: int, log, task, tqdm) -> dict:
    """Train a dense-prediction model in place with `task.loss` on per-image labels (boxes, masks); the validation
    score per epoch is the task's primary metric (COCO mAP, mIoU). No random shifts: they would have to move the
    boxes and masks with the pixels."""
    import torch

    x = torch.from_numpy(data.train_x)
    size = tuple(data.train_x.shape[-2:])

    def loss_of(xb, yb):
        out = model(xb)
        return task.loss(list(out) if isinstance(out, (tuple, list)) else [out], yb, size)

    history = _epochs(model, p, seed, log, tqdm, len(x), lambda idx: (x[idx], task.take(data.train_y, idx)), loss_of,
                      lambda: task_score(model, data, task), task.primary, task.primary)
    return {"val_accuracy": history[-1][task.primary], "metric": task.primary, "train_loss": history[-1]["loss"],
            "history": history}


def task_outputs(model, x, batch_size: int = 64) -> list:
    """Every output of a torch module on `x` (numpy), batched, in the module's order."""
    import numpy as np
    import torch

    model.eval()
    parts = []
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            out = model(torch.from_numpy(x[i : i + batch_size]))
            parts.append([o.numpy() for o in (out if isinstance(out, (tuple, list)) else [out])])
    return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]


def task_score(model, data, task) -> float:
    """The task's primary metric of a torch module on the validation split."""
    return float(task.evaluate(task_outputs(model, data.val_x), data.val_y)[task.primary])


def fit(model, data, p: TrainConfig, seed: int, log, tqdm, loss_fn=None) -> dict:
    """Train `model` in place; `loss_fn(logits, xb, yb)` replaces cross-entropy (distillation uses it)."""
    import torch
    import torch.nn.functional as F

    x, y = torch.from_numpy(data.train_x), torch.from_numpy(data.train_y)

    def loss_of(xb, yb):
        logits = model(xb)
        return loss_fn(logits, xb, yb) if loss_fn else F.cross_entropy(logits, yb, label_smoothing=p.label_smoothing)

    history = _epochs(model, p, seed, log, tqdm, len(x), lambda idx: (x[idx], y[idx]), loss_of,
                      lambda: accuracy(model, data.val_x, data.val_y), "val_accuracy", "top-1",
                      augment=random_shift if p.augment else None)
    return {"val_accuracy": history[-1]["val_accuracy"], "train_loss": history[-1]["loss"], "history": history}


def _epochs(model, p, seed: int, log, tqdm, n: int, take, loss_of, score, metric: str, label: str,
            augment=None) -> list[dict]:
    """The epoch loop of both trainers: shuffled batches of the `n` training images (`take(idx) -> (xb, yb)`,
    `augment(xb, generator)` on the images), `loss_of(xb, yb)` minimised by the one-cycle optimizer on the threads
    measured to be fastest (fewer when throughput collapses), `score()` on the validation split after each epoch,
    kept as `metric` and logged as `label`. Returns the history, one row per epoch."""
    import numpy as np
    import torch

    steps_per_epoch = math.ceil(n / p.batch_size)
    opt, sched = _optimizer(model, p, steps_per_epoch)
    gen = torch.Generator().manual_seed(seed)

    def forward_backward(xb, yb):
        loss = loss_of(xb, yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    model.train()
    choice = _choose_threads(model, opt, forward_backward, *take(np.arange(min(p.batch_size, n))), p.threads,
                             p.epochs * steps_per_epoch)
    log.info("%s", choice.describe())
    watch = threads_mod.Watch(total_steps=p.epochs * steps_per_epoch, threads=choice.threads)
    history = []
    bar = tqdm(total=p.epochs * steps_per_epoch, desc="train", unit="batch", mininterval=2.0, leave=False)
    for epoch in range(p.epochs):
        model.train()
        perm = torch.randperm(n, generator=gen).numpy()
        total, seen = 0.0, 0
        for i in range(0, n, p.batch_size):
            idx = perm[i : i + p.batch_size]
            if len(idx) < 2:  # BatchNorm cannot train on a batch of one
                continue
            xb, yb = take(idx)
            if augment is not None:
                xb = augment(xb, gen)
            t0 = time.perf_counter()
            loss = forward_backward(xb, yb)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"training loss became {loss.item()} at epoch {epoch + 1}; lower the learning rate "
                    f"(stages.<train>.lr, now {p.lr:g}) or check the data for NaN/inf values")
            sched.step()
            fewer = watch.step(time.perf_counter() - t0)
            if fewer:  # throughput collapsed (another job took the cores): back off
                torch.set_num_threads(fewer)
            total += loss.item() * len(idx)
            seen += len(idx)
            bar.update(1)
        value = score()
        history.append({"epoch": epoch + 1, "loss": total / max(seen, 1), metric: value})
        bar.set_postfix(loss=f"{total / max(seen, 1):.3f}", **{label: f"{value:.3f}"})
        log.info("epoch %d/%d  loss %.4f  val %s %.4f", epoch + 1, p.epochs, total / max(seen, 1), label, value)
    bar.close()
    return history


def _choose_threads(model, opt, forward_backward, xb, yb, requested: int, total_steps: int | None = None):
    """Training threads: `requested` if > 0, else measured on real steps of this model (pipeline.library.threads): on a busy
    2-core machine one thread can be several times faster than two. The measured steps are undone (weights and
    optimizer state restored), so the choice does not change what is trained."""
    import copy

    from pipeline.core.host import host_threads

    saved = (copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict()))
    try:
        return threads_mod.resolve(requested, step=lambda: forward_backward(xb, yb), host_cores=host_threads(0),
                                   total_steps=total_steps)
    finally:
        model.load_state_dict(saved[0])
        opt.load_state_dict(saved[1])


def random_shift(xb, gen):
    """Pad with the border value and crop back at a random offset (same offset for the whole batch: cheap on CPU)."""
    import torch
    import torch.nn.functional as F

    pad = max(1, xb.shape[-1] // 8)
    padded = F.pad(xb, (pad, pad, pad, pad), mode="replicate")
    dy, dx = torch.randint(0, 2 * pad + 1, (2,), generator=gen).tolist()
    return padded[..., dy : dy + xb.shape[-2], dx : dx + xb.shape[-1]]


def accuracy(model, x, y, batch_size: int = 256) -> float:
    import numpy as np
    import torch

    model.eval()
    with torch.inference_mode():
        pred = np.concatenate([model(torch.from_numpy(x[i : i + batch_size])).argmax(1).numpy()
                               for i in range(0, len(x), batch_size)])
    return float((pred == y).mean())


@dataclass
class FinetuneConfig(TrainConfig):
    """Fine-tuning knobs shared by prune, distill and qat: the training ones, fewer epochs at a lower rate; passed to
    fit() as a TrainConfig."""

    epochs: NonNegativeInt = 5  # fine-tuning passes over the training split (0: prune or fold only)
    lr: Positive = 0.001  # peak learning rate (one-cycle schedule)


def train_config(p: Any, **override: Any) -> TrainConfig:
    """The TrainConfig that fit() reads, taken from a stage config that extends FinetuneConfig."""
    kw = {f.name: getattr(p, f.name) for f in fields(TrainConfig) if hasattr(p, f.name)}
    return TrainConfig(**{**kw, **override})


def check_finetune(p: Any, min_epochs: int = 0) -> list[str]:
    return check_training(p, min_epochs=min_epochs, min_batch=2)


def load_rebuildable(artifact, stage_name: str):
    """Load an upstream PyTorch model that can be rebuilt and edited (zoo or `_target_` class, not a graph file)."""
    from pipeline.models import load_torch

    model, spec = load_torch(artifact.path)
    if spec.get("kind", "state_dict") != "state_dict":
        raise ValueError(
            f"stage {stage_name!r} edits the network's modules, but input {artifact.stage!r} is a {spec['kind']} "
            f"graph file; import the model as `_target_` (your nn.Module class) plus a state_dict checkpoint instead")
    return model, spec


def start_finetune(ctx, p: Any) -> tuple[Any, dict, Any, float]:
    """What a stage that edits and re-trains its upstream model does first: seed PyTorch, set the threads, load the
    editable model and the data. Returns (model, its spec, data, its top-1 on the validation split before the edit)."""
    import torch

    torch.manual_seed(ctx.settings.seed)
    set_threads(p)
    model, spec = load_rebuildable(ctx.input, ctx.name)
    data = ctx.data()
    return model, spec, data, val_accuracy(model, data)


def base_spec(spec: dict) -> dict:
    """The spec without structural edits: what `resized` is measured against."""
    return {k: v for k, v in spec.items() if k not in ("resized", "bn_folded")}


def sizes(path: Path) -> dict[str, int]:
    """Dense file size and gzip-compressed size (zeros of unstructured pruning compress; they do not shrink the file)."""
    raw = Path(path).read_bytes()
    return {"file_bytes": len(raw), "gzip_bytes": len(gzip.compress(raw, compresslevel=6, mtime=0))}


def sparsity(model) -> float:
    """Share of exactly-zero weights in the Conv2d and Linear layers."""
    from torch import nn

    zeros = total = 0
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            w = m.weight.detach()
            zeros += int((w == 0).sum())
            total += w.numel()
    return zeros / max(total, 1)


def complexity(model, input_shape) -> dict[str, int]:
    from pipeline.models.complexity import count

    return count(model, tuple(input_shape))


def val_accuracy(model, data) -> float:
    return accuracy(model, data.val_x, data.val_y)


def set_threads(p: Any) -> None:
    import torch

    from pipeline.core.host import host_threads

    torch.set_num_threads(host_threads(p.threads))
