"""`quantize_onnx`: ONNX Runtime static int8 quantization (QDQ format, per-channel weights), calibrated on N images
of the training split (pipeline.convert.onnx.quantize_qdq). Every output of the graph is kept (a detector's heatmap
and boxes); calibration images are fed as the model takes them (an imported NHWC graph gets NHWC images).

When the int8 model misses parity's budget against its fp32 source, the remedies of pipeline.convert.remedies are
tried, cheapest first (per-channel weights, more calibration images, entropy / percentile calibration, the outputs'
decoding in float, NNCF's int8, NNCF accuracy control), each reported; the best one is the artifact."""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

from pipeline.core.artifacts import Artifact
from pipeline.convert.onnx import QdqOptions
from pipeline.stages.base import Int8Config, Stage, StageContext, StageResult


@dataclass
class QuantizeOnnxConfig(Int8Config, QdqOptions):
    pass


# implements: what `type: quantize` resolves to for ONNX Runtime devices
class QuantizeOnnx(Stage, type="quantize_onnx", config=QuantizeOnnxConfig, accepts=("onnx",), produces="onnx",
                   implements=("quantize", "onnx"), inputs=1, reads=("data", "seed", "task", "gate.max_accuracy_drop")):
    @classmethod
    def check(cls, p: QuantizeOnnxConfig, cfg) -> list[str]:
        from pipeline import tasks

        return tasks.check_name(str(cfg.get("task", "classification")))

    def run(self, ctx: StageContext) -> StageResult:
        from pipeline.convert import nncf_onnx, remedies
        from pipeline.library import calibration
        from pipeline.convert.onnx import quantize_qdq

        p: QuantizeOnnxConfig = ctx.params
        src, data, seed = ctx.input, ctx.data(), int(ctx.settings.seed)
        judge, scorer, labels = remedies.judge_for(data, ctx.settings.task, seed, src, p.remedy_samples)

        def build(o: dict, d):
            n = remedies.calibration_count(o, p.calibration_samples, len(data.train_x))
            calib = calibration.inputs(data, n, seed, ctx.name, "onnx", src.meta)
            out = d / "model.int8.onnx"
            if o.get("tool") == "nncf":
                facts = nncf_onnx.quantize(src.path, calib, out)
            elif o.get("tool") == "nncf_ac":
                vx, vy = remedies.accuracy_control_data(data, seed, 300, "onnx", src.meta)
                facts = nncf_onnx.quantize_with_accuracy_control(
                    src.path, calib, vx, vy, out, float(ctx.settings.gate.max_accuracy_drop) / 200.0)
            else:
                opts = replace(QdqOptions(**{f.name: getattr(p, f.name) for f in fields(QdqOptions)}),
                               per_channel=o["per_channel"], method=o["method"])
                facts = quantize_qdq(src.path, out, calib, opts, float_tail=bool(o.get("float_tail")))
                facts.pop("duplicate_initializer_bytes_saved")
            return out, {**src.meta, "task": ctx.settings.task,
                         "quantization": {**facts, "calibration_input": calibration.describe(calib)}}

        path, meta, report = remedies.climb("onnx", {"per_channel": p.per_channel, "method": p.method}, build,
                                            judge("onnx"), ctx.workdir, ctx.log, p.remedies, labels,
                                            scorer.describe())
        ctx.log.info("quantized %s: %s (%d attempt(s), %s)", path.name, report["chosen"], len(report["attempts"]),
                     "within budget" if report["met"] else "BUDGET NOT MET")
        return StageResult(Artifact(ctx.name, "onnx", "int8", path, meta),
                           metrics={"calibration_samples": meta["quantization"]["calibration_samples"],
                                    "remedy_attempts": len(report["attempts"]), "within_budget": float(report["met"])},
                           info={"remedies": report})
