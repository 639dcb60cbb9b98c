"""`train`: train a zoo model on the recipe's data (one-cycle AdamW/SGD; label smoothing for classifiers), or fine-tune
an upstream PyTorch model (`inputs: [<import stage>]`: a pretrained network gets a new head when the data has other
classes). PyTorch models through pipeline.library.training, Keras models through pipeline/models/keras_zoo.py: the stage
dispatches on the model's framework and produces its format.

`task` (pipeline.tasks) decides the loss and the score: cross-entropy and top-1 for classification, the detector's
CenterNet loss and COCO mAP, per-pixel cross-entropy and mIoU. The artifact's metadata carries the task, the output
names and a detector's post-processing, so every later stage reads the model's outputs the same way.
"""
from __future__ import annotations

from pipeline.core.artifacts import Artifact
from pipeline.stages.base import Stage, StageContext, StageResult
from pipeline.library.training import TrainConfig, check_training


# accepts: optionally a PyTorch model to fine-tune instead of a zoo model trained from scratch; libraries: Keras
# models train with TensorFlow through keras_zoo
class Train(Stage, type="train", config=TrainConfig, accepts=("torch",), produces="torch", inputs=(0, 1),
            reads=("data", "model", "seed", "task"), libraries=("keras",)):
    @classmethod
    def check(cls, p: TrainConfig, cfg) -> list[str]:
        from pipeline import models, tasks

        problems = check_training(p)
        task = str(cfg.get("task", "classification"))
        # a stage fine-tuning an upstream model takes that model's architecture, not model.name's
        fine_tunes = any(s.get("type") == "train" and s.get("inputs") for s in (cfg.get("stages") or {}).values()
                         if hasattr(s, "get"))
        problems += tasks.plan_problems(task, str(cfg.data.name), None if fine_tunes else str(cfg.model.name))
        if task != "classification" and models.framework(str(cfg.model.name)) == "keras" and not fine_tunes:
            problems.append(f"model.name: {cfg.model.name!r} (Keras) trains as a classifier only; task={task!r} "
                            f"needs a PyTorch model of the zoo")
        if task == "none" or str(cfg.data.name) == "images":
            problems.append(f"{'task=none' if task == 'none' else 'data=images'} has no labels to train on: import a "
                            f"trained model (type: import_model) instead of a train stage")
        return problems

    @classmethod
    def planned_format(cls, params: TrainConfig, cfg) -> str:
        from pipeline.models import framework

        return framework(cfg.model.name)

    def run(self, ctx: StageContext) -> StageResult:
        from pipeline import models, tasks

        model_cfg = ctx.settings.model
        p: TrainConfig = ctx.params
        data = ctx.data()
        from pipeline.data.size import hw

        h, w = hw(model_cfg.input_size)
        task = tasks.for_model(ctx.settings.task, {"input_shape": [1, 3, h, w]}, data.num_classes)
        if ctx.inputs:
            return self._finetune(ctx, data, task)
        fw = models.framework(model_cfg.name)
        spec = {"name": model_cfg.name, "num_classes": data.num_classes, "kwargs": models.arch_kwargs(model_cfg)}
        meta = {"input_shape": [1, 3, h, w], "num_classes": data.num_classes, "classes": data.classes,
                "arch": spec, "task": ctx.settings.task}
        if fw == "keras":
            from pipeline.models import keras_zoo

            model, result, path = keras_zoo.train(spec, (h, w), data, p, ctx.settings.seed, ctx.log, ctx.workdir)
            meta.update(input_layout="NHWC", parameters=int(model.count_params()))
        else:
            from pipeline.library import training

            model, result = training.train_zoo_model(spec, data, p, ctx.settings.seed, ctx.log, task)
            path = models.save_torch(model, ctx.workdir, spec)
            meta["parameters"] = sum(t.numel() for t in model.parameters())
            meta.update(models.output_facts(model))
        return self._result(ctx, fw, path, meta, result, task)

    def _finetune(self, ctx: StageContext, data, task) -> StageResult:
        import torch

        from pipeline import models

        from pipeline.library import training

        src = ctx.input
        model, spec, facts = training.finetune_from(src, data.num_classes, ctx.name, ctx.log)
        torch.manual_seed(ctx.settings.seed)
        result = training.train_for_task(model, data, ctx.params, ctx.settings.seed, ctx.log, task)
        path = models.save_torch(model, ctx.workdir, spec)
        meta = {**{k: v for k, v in src.meta.items() if k not in ("sha256",)}, "num_classes": data.num_classes,
                "classes": data.classes, "arch": spec, "task": ctx.settings.task, "finetune": facts,
                "parameters": sum(t.numel() for t in model.parameters()), **models.output_facts(model)}
        return self._result(ctx, "torch", path, meta, result, task)

    @staticmethod
    def _result(ctx, fw, path, meta, result, task) -> StageResult:
        metric = "val_accuracy" if task.name == "classification" else f"val_{task.primary}"
        return StageResult(Artifact(ctx.name, fw, "fp32", path, meta),
                           metrics={metric: result["val_accuracy"], "train_loss": result["train_loss"],
                                    "parameters": meta["parameters"]},
                           info={"history": result["history"]})
