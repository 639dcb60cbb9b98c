"""`evaluate`: the task metric of a model on the validation split, run in its own runtime (one task per input).

The task (`task`, pipeline.tasks) decides what is scored from ALL the model's outputs: top-1/top-5 for a classifier,
COCO mAP@[.5:.95] and mAP@.5 (pycocotools) for a detector, mIoU and pixel accuracy for a segmenter; `task=none` has
no labels and no metric. The primary metric (top1, map50_95, miou) is the artifact's `accuracy` in the summary, so
the accuracy gate (gate.max_accuracy_drop, in points) and the objective judge any task the same way; every metric is
a metric of this stage.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from pipeline.core.artifacts import FORMATS
from pipeline.core.bounds import PositiveInt
from pipeline.core.results import Findings
from pipeline.stages.base import Stage, StageContext, StageResult


@dataclass
class EvaluateConfig:
    batch_size: PositiveInt = 64  # images per inference call
    max_samples: Optional[PositiveInt] = None  # evaluate on the first N validation images only (null = all)


class Evaluate(Stage, type="evaluate", config=EvaluateConfig, accepts=FORMATS, per_input=True, reads=("data", "task"),
               libraries=("onnxruntime", "torch", "ai-edge-litert", "tensorflow-cpu", "coremltools", "numpy",
                          "pycocotools", "scikit-learn")):
    @classmethod
    def check(cls, p: EvaluateConfig, cfg) -> list[str]:
        from pipeline import tasks

        return tasks.check_name(str(cfg.get("task", "classification")))

    def run(self, ctx: StageContext) -> StageResult:
        from pipeline import runtimes, tasks

        a = ctx.input
        data = ctx.data()
        task = tasks.for_model(ctx.settings.task, a.meta, data.num_classes or None)
        model = runtimes.load(a.format, a.path, a.meta, threads=0)
        x, y = data.val_x, data.val_y
        if ctx.params.max_samples:
            x = x[: ctx.params.max_samples]
            y = None if y is None else y[: ctx.params.max_samples]
        if not task.needs_labels or y is None:
            why = f"task {task.name!r} has no labels to score a model with (parity holds it to its source instead)"
            return self._not_applicable(ctx, a, model, task, why, len(x))
        outputs = runtimes.predict_all_outputs(model, x, ctx.params.batch_size)
        names = list(a.meta.get("output_names") or [f"output_{i}" for i in range(len(outputs))])
        misfit = tasks.get(task.name, postprocess=a.meta.get("postprocess")).check_model(
            [{"name": n, "shape": list(o.shape)} for n, o in zip(names, outputs)], data.num_classes or None)
        if misfit:  # e.g. an imported 1000-class checkpoint on 5-class data, before its new head
            return self._not_applicable(ctx, a, model, task, misfit[0].split(":")[0], len(x))
        scores = task.evaluate(outputs, y)
        primary = scores[task.primary]
        ctx.log.info("%s: %s on %d validation images (%s)", a.stage,
                     ", ".join(f"{k} {v:.4f}" for k, v in scores.items()), len(x), model.runtime)
        metrics = {**scores, "samples": len(x)}
        if data.num_classes:  # (the registry's chance level: 1 / classes)
            metrics["classes"] = data.num_classes
        if task.name == "classification":
            metrics["accuracy"] = primary  # the name the classification recipes' runs have always logged
        return StageResult(metrics=metrics,
                           about={a.stage: Findings(accuracy=primary, eval_runtime=model.runtime,
                                                    extra={"task": {"name": task.name, "metric": task.primary,
                                                                    "metrics": scores}})})

    @staticmethod
    def _not_applicable(ctx: StageContext, a, model, task, why: str, n: int) -> StageResult:
        """No metric for this model on this data: `accuracy` stays None and the reason is shown as n/a, never 0%."""
        ctx.log.info("%s: no %s on this data: %s (%d images)", a.stage, task.primary or "metric", why, n)
        return StageResult(metrics={"samples": n},
                           about={a.stage: Findings(eval_runtime=model.runtime, accuracy_na=why,
                                                    extra={"task": {"name": task.name, "metrics": {}}})})
