"""`train`: train a zoo model on the recipe's data (one-cycle AdamW/SGD, label smoothing). PyTorch models here; Keras
models in pipeline/models/keras_zoo.py (the stage dispatches on the model's framework and produces its format)."""
from __future__ import annotations

import math
from dataclasses import dataclass

from pipeline.artifacts import Artifact
from pipeline.stages.base import Stage, StageContext, StageResult


@dataclass
class TrainConfig:
    epochs: int = 10  # passes over the training split
    batch_size: int = 64
    lr: float = 0.003  # peak learning rate (one-cycle schedule)
    weight_decay: float = 1e-4
    optimizer: str = "adamw"  # adamw | sgd
    label_smoothing: float = 0.1
    augment: bool = True  # random shifts: pad by 1/8 of the input and crop back at a random offset
    threads: int = 0  # CPU threads for training; 0 = all host cores


def check_training(p: Any, min_epochs: int = 1, min_batch: int = 1) -> list[str]:
    """The training knobs' checks, shared with the fine-tuning stages (pipeline.stages._compress)."""
    problems = []
    if p.epochs < min_epochs:
        problems.append(f"epochs must be >= {min_epochs}, got {p.epochs}")
    if p.batch_size < min_batch:
        why = " (batch norm trains on batches)" if min_batch > 1 else ""
        problems.append(f"batch_size must be >= {min_batch}{why}, got {p.batch_size}")
    if not p.lr > 0:
        problems.append(f"lr must be > 0, got {p.lr}")
    if p.optimizer not in ("adamw", "sgd"):
        problems.append(f"optimizer must be 'adamw' or 'sgd', got {p.optimizer!r}")
    return problems


class Train(Stage):
    type = "train"
    Config = TrainConfig
    produces = "torch"
    uses = ("data", "model", "seed")
    libraries = ("torch", "numpy", "tensorflow-cpu", "keras")  # Keras models train with TensorFlow
    code = ("models", "data")

    @classmethod
    def check(cls, p: TrainConfig, cfg) -> list[str]:
        return check_training(p)

    @classmethod
    def planned_format(cls, params: TrainConfig, cfg) -> str:
        from pipeline.models import framework

        return framework(cfg.model.name)

    def run(self, ctx: StageContext) -> StageResult:
        from pipeline.models import framework

        if framework(ctx.cfg.model.name) == "keras":
            return run_keras(ctx)
        import numpy as np
        import torch
        from tqdm.auto import tqdm

        from pipeline import models
        from pipeline.runtimes import host_threads

        p: TrainConfig = ctx.params
        torch.manual_seed(ctx.cfg.seed)
        torch.set_num_threads(host_threads(p.threads))
        data = ctx.data()
        model = models.build(ctx.cfg.model.name, data.num_classes, **models.arch_kwargs(ctx.cfg.model))
        result = fit(model, data, p, ctx.cfg.seed, ctx.log, tqdm)
        spec = {"name": ctx.cfg.model.name, "num_classes": data.num_classes, "kwargs": models.arch_kwargs(ctx.cfg.model)}
        path = models.save_torch(model, ctx.workdir, spec)
        meta = {"input_shape": [1, 3, ctx.cfg.model.input_size, ctx.cfg.model.input_size],
                "num_classes": data.num_classes, "classes": data.classes, "arch": spec,
                "parameters": sum(t.numel() for t in model.parameters())}
        return StageResult(Artifact(ctx.name, "torch", "fp32", path, meta),
                           metrics={"val_accuracy": result["val_accuracy"], "train_loss": result["train_loss"],
                                    "parameters": meta["parameters"]},
                           info={"history": result["history"]})


def run_keras(ctx: StageContext) -> StageResult:
    from pipeline import models
    from pipeline.models import keras_zoo
    from pipeline.runtimes import host_threads

    p: TrainConfig = ctx.params
    keras_zoo.set_threads(host_threads(p.threads))
    data = ctx.data()
    size = int(ctx.cfg.model.input_size)
    model = keras_zoo.build(ctx.cfg.model.name, data.num_classes, size, **models.arch_kwargs(ctx.cfg.model))
    result = keras_zoo.fit(model, data, p, ctx.cfg.seed, ctx.log)
    path = keras_zoo.save(model, ctx.workdir)
    spec = {"name": ctx.cfg.model.name, "num_classes": data.num_classes, "kwargs": models.arch_kwargs(ctx.cfg.model)}
    meta = {"input_shape": [1, 3, size, size], "input_layout": "NHWC", "num_classes": data.num_classes,
            "classes": data.classes, "arch": spec, "parameters": int(model.count_params())}
    return StageResult(Artifact(ctx.name, "keras", "fp32", path, meta),
                       metrics={"val_accuracy": result["val_accuracy"], "train_loss": result["train_loss"],
                                "parameters": meta["parameters"]},
                       info={"history": result["history"]})


def fit(model, data, p: TrainConfig, seed: int, log, tqdm, loss_fn=None) -> dict:
    """Train `model` in place; `loss_fn(logits, xb, yb)` replaces cross-entropy (distillation uses it)."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    x, y = torch.from_numpy(data.train_x), torch.from_numpy(data.train_y)
    steps_per_epoch = math.ceil(len(x) / p.batch_size)
    if p.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=p.lr, momentum=0.9, weight_decay=p.weight_decay, nesterov=True)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=p.lr, total_steps=p.epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(seed)
    history = []
    bar = tqdm(total=p.epochs * steps_per_epoch, desc="train", unit="batch", mininterval=2.0, leave=False)
    for epoch in range(p.epochs):
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        total, n = 0.0, 0
        for i in range(0, len(x), p.batch_size):
            idx = perm[i : i + p.batch_size]
            if len(idx) < 2:  # BatchNorm cannot train on a batch of one
                continue
            xb, yb = x[idx], y[idx]
            if p.augment:
                xb = random_shift(xb, gen)
            logits = model(xb)
            loss = loss_fn(logits, xb, yb) if loss_fn else F.cross_entropy(logits, yb, label_smoothing=p.label_smoothing)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"training loss became {loss.item()} at epoch {epoch + 1}; lower the learning rate "
                    f"(stages.<train>.lr, now {p.lr:g}) or check the data for NaN/inf values")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            n += len(idx)
            bar.update(1)
        acc = accuracy(model, data.val_x, data.val_y)
        history.append({"epoch": epoch + 1, "loss": total / max(n, 1), "val_accuracy": acc})
        bar.set_postfix(loss=f"{total / max(n, 1):.3f}", val_acc=f"{acc:.3f}")
        log.info("epoch %d/%d  loss %.4f  val top-1 %.4f", epoch + 1, p.epochs, total / max(n, 1), acc)
    bar.close()
    return {"val_accuracy": history[-1]["val_accuracy"], "train_loss": history[-1]["loss"], "history": history}


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
