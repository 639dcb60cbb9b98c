"""`quantize_onnx`: ONNX Runtime static int8 quantization (QDQ format, per-channel weights), calibrated on N images
of the training split (pipeline.convert.onnx.quantize_qdq). Every output of the graph is kept (a detector's heatmap
and boxes); calibration images are fed as the model takes them (an imported NHWC graph gets NHWC images)."""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.artifacts import Artifact
from pipeline.bounds import PositiveInt
from pipeline.convert.onnx import QdqOptions, check_options
from pipeline.stages.base import Stage, StageContext, StageResult


@dataclass
class QuantizeOnnxConfig(QdqOptions):
    calibration_samples: PositiveInt = 128  # training images used to calibrate activation ranges


class QuantizeOnnx(Stage):
    type = "quantize_onnx"
    Config = QuantizeOnnxConfig
    accepts = ("onnx",)
    produces = "onnx"
    implements = ("quantize", "onnx")  # what `type: quantize` resolves to for ONNX Runtime devices
    min_inputs = max_inputs = 1
    reads = ("data", "seed", "task")

    @classmethod
    def check(cls, p: QuantizeOnnxConfig, cfg) -> list[str]:
        from pipeline import tasks

        problems = check_options(p) + tasks.check_name(str(cfg.get("task", "classification")))
        if p.calibration_samples <= 0:
            problems.insert(0, f"calibration_samples must be > 0, got {p.calibration_samples}; 100-500 images is usual")
        return problems

    def run(self, ctx: StageContext) -> StageResult:
        from pipeline import calibration
        from pipeline.convert.onnx import quantize_qdq

        p: QuantizeOnnxConfig = ctx.params
        src = ctx.input
        calib = calibration.inputs(ctx.data(), p.calibration_samples, ctx.settings.seed, ctx.name, "onnx", src.meta)
        out = ctx.workdir / "model.int8.onnx"
        facts = {**quantize_qdq(src.path, out, calib, p), "calibration_input": calibration.describe(calib)}
        ctx.log.info("quantized %s: %d calibration images, %s; %d bytes of duplicate initializers shared",
                     out.name, p.calibration_samples, p.method, facts.pop("duplicate_initializer_bytes_saved"))
        return StageResult(Artifact(ctx.name, "onnx", "int8", out,
                                    {**src.meta, "quantization": facts, "task": ctx.settings.task}),
                           metrics={"calibration_samples": p.calibration_samples})
