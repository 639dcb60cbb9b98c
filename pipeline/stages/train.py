"""`train`: train a zoo model on the recipe's data (one-cycle AdamW/SGD, label smoothing). PyTorch models through
pipeline.training, Keras models through pipeline/models/keras_zoo.py: the stage dispatches on the model's framework and
produces its format."""
from __future__ import annotations

from pipeline.artifacts import Artifact
from pipeline.stages.base import Stage, StageContext, StageResult
from pipeline.training import TrainConfig, check_training


class Train(Stage):
    type = "train"
    Config = TrainConfig
    produces = "torch"
    reads = ("data", "model", "seed")
    libraries = ("keras",)  # Keras models train with TensorFlow through keras_zoo

    @classmethod
    def check(cls, p: TrainConfig, cfg) -> list[str]:
        return check_training(p)

    @classmethod
    def planned_format(cls, params: TrainConfig, cfg) -> str:
        from pipeline.models import framework

        return framework(cfg.model.name)

    def run(self, ctx: StageContext) -> StageResult:
        from pipeline import models

        model_cfg = ctx.settings.model
        fw = models.framework(model_cfg.name)
        p: TrainConfig = ctx.params
        data = ctx.data()
        spec = {"name": model_cfg.name, "num_classes": data.num_classes, "kwargs": models.arch_kwargs(model_cfg)}
        size = int(model_cfg.input_size)
        meta = {"input_shape": [1, 3, size, size], "num_classes": data.num_classes, "classes": data.classes,
                "arch": spec}
        if fw == "keras":
            from pipeline.models import keras_zoo

            model, result, path = keras_zoo.train(spec, size, data, p, ctx.settings.seed, ctx.log, ctx.workdir)
            meta.update(input_layout="NHWC", parameters=int(model.count_params()))
        else:
            from pipeline import training

            model, result = training.train_zoo_model(spec, data, p, ctx.settings.seed, ctx.log)
            path = models.save_torch(model, ctx.workdir, spec)
            meta["parameters"] = sum(t.numel() for t in model.parameters())
        return StageResult(Artifact(ctx.name, fw, "fp32", path, meta),
                           metrics={"val_accuracy": result["val_accuracy"], "train_loss": result["train_loss"],
                                    "parameters": meta["parameters"]},
                           info={"history": result["history"]})
