"""Helpers shared by the compression stages (prune, distill, qat, fuse). Not a stage (the leading underscore keeps
`load_all` from importing it); frameworks are imported inside the functions."""
from __future__ import annotations

import gzip
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from pipeline.stages.train import TrainConfig, check_training


@dataclass
class FinetuneConfig:
    """Fine-tuning knobs shared by prune, distill and qat; passed to train.fit() as a TrainConfig."""

    epochs: int = 5  # fine-tuning passes over the training split
    batch_size: int = 64
    lr: float = 0.001  # peak learning rate (one-cycle schedule)
    weight_decay: float = 1e-4
    optimizer: str = "adamw"  # adamw | sgd
    label_smoothing: float = 0.1
    augment: bool = True  # random shifts (see the train stage)
    threads: int = 0  # CPU threads; 0 = all host cores


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


def accuracy(model, data) -> float:
    from pipeline.stages.train import accuracy as acc

    return acc(model, data.val_x, data.val_y)


def set_threads(p: Any) -> None:
    import torch

    from pipeline.runtimes import host_threads

    torch.set_num_threads(host_threads(p.threads))
