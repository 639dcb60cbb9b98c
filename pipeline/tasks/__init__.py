"""Tasks: what a model's outputs mean, how they are scored and how two models' outputs agree.

One plug-in per kind, registered by name, loaded lazily (planning lists and checks names without importing numpy-heavy
code or any ML framework):
  classification  logits [N, classes]                      -> top1, top5
  detection       raw head outputs, decoded + NMS outside   -> map50_95, map50 (COCO, pycocotools)
  segmentation    per-pixel logits [N, classes, H, W]       -> miou, pixel_acc
  none            anything, no labels                       -> no task metric (calibration, parity, benchmark only)

A task has: `metrics` (names, the first is the primary one), `higher_is_better` per metric, `evaluate(outputs, labels)`
-> {metric: value}, `agreement(reference_outputs, outputs, labels)` -> {name: value} for parity, the default parity
thresholds `parity_thresholds`, and `loss`/`targets` for training its head. `outputs` is always the list of a model's
output arrays in the order of its signature (one array for a classifier).
"""
from __future__ import annotations

import importlib
from typing import Any

TASKS: dict[str, str] = {
    "classification": "pipeline.tasks.classification:Classification",
    "detection": "pipeline.tasks.detection:Detection",
    "segmentation": "pipeline.tasks.segmentation:Segmentation",
    "none": "pipeline.tasks.unlabelled:NoTask",
}
# Metric names by task, known without importing the plug-ins (planning, objective, gates, summary columns).
METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("top1", "top5"),
    "detection": ("map50_95", "map50"),
    "segmentation": ("miou", "pixel_acc"),
    "none": (),
}
# How the primary metric reads in tables and messages (its values are fractions, shown as percentages / points).
LABELS: dict[str, str] = {"top1": "top-1", "top5": "top-5", "map50_95": "mAP@[.5:.95]", "map50": "mAP@.5",
                          "miou": "mIoU", "pixel_acc": "pixel accuracy"}


def primary_label(task: str) -> str:
    """The primary metric's display name of a task ("top-1" for classification; "accuracy" for none)."""
    metrics = METRICS.get(task) or ()
    return LABELS.get(metrics[0], metrics[0]) if metrics else "accuracy"


HIGHER_IS_BETTER: dict[str, bool] = {"top1": True, "top5": True, "map50_95": True, "map50": True, "miou": True,
                                     "pixel_acc": True}
# The data sets each task reads (the `data.name` values), for the plan-time check of a recipe.
DATASETS: dict[str, tuple[str, ...]] = {
    "classification": ("digits", "imagefolder", "fashion_mnist"),
    # (images: no labels; the model is held to its source by the task's agreement, and evaluate shows n/a)
    "detection": ("digits_detection", "coco", "yolo", "images"),
    "segmentation": ("digits_segmentation", "masks", "images"),
    "none": ("images", "digits", "imagefolder", "fashion_mnist", "digits_detection", "digits_segmentation", "coco", "yolo", "masks"),
}
# Module holding check / fingerprint / load for each data set name of a task (the classification sets live in
# pipeline.data itself).
DATA_MODULES: dict[str, str] = {
    "digits": "pipeline.data", "imagefolder": "pipeline.data", "fashion_mnist": "pipeline.data.fashion_mnist",
    "digits_detection": "pipeline.data.detection", "coco": "pipeline.data.detection", "yolo": "pipeline.data.detection",
    "digits_segmentation": "pipeline.data.segmentation", "masks": "pipeline.data.segmentation",
    "images": "pipeline.data.unlabelled",
}


def names() -> list[str]:
    return list(TASKS)


def check_name(name: str) -> list[str]:
    """Problems with a task name (cheap, imports nothing)."""
    if name not in TASKS:
        return [f"task: unknown task {name!r}; choose one of {', '.join(TASKS)} (e.g. task=detection)"]
    return []


def primary_metric(name: str) -> str | None:
    """The metric the objective, the gates and the summary speak of for this task (None for `none`)."""
    m = METRICS[name]
    return m[0] if m else None


def check_data(task: str, data_name: str) -> list[str]:
    """A task reads only the data layouts that carry its labels: the plan-time error names both and the fix."""
    problems = check_name(task)
    if problems:
        return problems
    if data_name not in DATASETS[task]:
        return [f"data.name: task {task!r} cannot read data set {data_name!r} (its labels are not {task} labels); "
                f"choose one of {', '.join(DATASETS[task])} (e.g. data={DATASETS[task][0]})"]
    return []


def data_module(data_name: str):
    """The module with `check(data_cfg)`, `fingerprint(data_cfg, input_size)` and `load(data_cfg, input_size)`."""
    if data_name not in DATA_MODULES:
        raise ValueError(f"data.name: unknown data set {data_name!r}; available: {', '.join(DATA_MODULES)}")
    return importlib.import_module(DATA_MODULES[data_name])


def for_model(name: str, meta: dict[str, Any] | None = None, num_classes: int | None = None):
    """The task plug-in for a model artifact: its options taken from the artifact's metadata (a detector's
    `postprocess`, the input size its boxes are clipped to) and the data's class count."""
    meta = meta or {}
    shape = meta.get("input_shape") or []
    size = tuple(shape[-2:]) if len(shape) == 4 else None
    opts: dict[str, Any] = {"num_classes": num_classes if num_classes else meta.get("num_classes")}
    if name == "detection":
        opts.update(postprocess=meta.get("postprocess"), image_size=size)
    return get(name, **opts)


def plan_problems(task: str, data_name: str, model_name: str | None = None) -> list[str]:
    """The recipe-level rules of a task, cheap (no framework): the task exists, the data carries its labels, and a zoo
    model trained from scratch is built for it. Each sentence names both sides and the fix."""
    problems = check_data(task, data_name)
    if problems or model_name is None or task == "none":  # (any model's outputs can go unscored)
        return problems
    from pipeline import models

    built_for = models.task_of(model_name)
    if model_name in models.ZOO and built_for != task:
        data = DATASETS[built_for][0]
        problems.append(f"model.name: {model_name!r} is a {built_for} model but task={task!r}: set task={built_for} "
                        f"(with data={data}) or choose a {task} model")
    return problems


def get(name: str, **options: Any):
    """An instance of the task plug-in `name`; options are the task's settings (e.g. detection's `postprocess`)."""
    problems = check_name(name)
    if problems:
        raise ValueError(problems[0])
    module, cls = TASKS[name].split(":")
    return getattr(importlib.import_module(module), cls)(**options)
