"""`evaluate`: top-1 accuracy of a model on the validation split, run in its own runtime (one task per input)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from pipeline.artifacts import FORMATS
from pipeline.bounds import PositiveInt
from pipeline.results import Findings
from pipeline.stages.base import Stage, StageContext, StageResult


@dataclass
class EvaluateConfig:
    batch_size: PositiveInt = 64  # images per inference call
    max_samples: Optional[PositiveInt] = None  # evaluate on the first N validation images only (null = all)


class Evaluate(Stage):
    type = "evaluate"
    Config = EvaluateConfig
    accepts = FORMATS
    per_input = True
    reads = ("data",)
    libraries = ("onnxruntime", "torch", "ai-edge-litert", "tensorflow-cpu", "coremltools", "numpy")

    def run(self, ctx: StageContext) -> StageResult:
        from pipeline import runtimes

        a = ctx.input
        data = ctx.data()
        model = runtimes.load(a.format, a.path, a.meta, threads=0)
        x, y = data.val_x, data.val_y
        if ctx.params.max_samples:
            x, y = x[: ctx.params.max_samples], y[: ctx.params.max_samples]
        logits = runtimes.predict_all(model, x, ctx.params.batch_size)
        acc = float((logits.argmax(1) == y).mean())
        ctx.log.info("%s: top-1 %.4f on %d validation images (%s)", a.stage, acc, len(y), model.runtime)
        return StageResult(metrics={"accuracy": acc, "samples": len(y)},
                           about={a.stage: Findings(accuracy=acc, eval_runtime=model.runtime)})
