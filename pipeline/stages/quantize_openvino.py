"""`quantize_openvino`: int8 IR with NNCF, calibrated on N training images: post-training `nncf.quantize`, or with
accuracy control (`nncf.quantize_with_accuracy_control`: the operations that cost most accuracy go back to float
until the drop is within the budget; the summary lists them) (pipeline.convert.openvino). Post-training int8 outside
parity's budget against the fp32 IR gets the remedies of pipeline.convert.remedies (more calibration images, the
mixed preset, full bias correction, accuracy control where there are labels), each reported."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from pipeline.core.artifacts import Artifact
from pipeline.core.bounds import PositiveInt, between, one_of
from pipeline.convert.openvino import PRESETS
from pipeline.stages.base import Int8Config, Stage, StageContext, StageResult


@dataclass
class QuantizeOpenvinoConfig(Int8Config):
    preset: one_of(*PRESETS) = "performance"  # NNCF preset: performance (symmetric) | mixed (asymmetric activations)
    accuracy_control: bool = False  # keep the costliest operations in float until the top-1 drop is within budget
    max_accuracy_drop: Optional[between(0, 100, hi_open=True)] = None  # accuracy control: top-1 points; null = gate.max_accuracy_drop
    accuracy_control_samples: PositiveInt = 300  # labelled training images NNCF validates on (not the validation split)


class QuantizeOpenvino(Stage, type="quantize_openvino", config=QuantizeOpenvinoConfig, accepts=("openvino",),
                       produces="openvino", implements=("quantize", "openvino"), inputs=1,
                       reads=("data", "seed", "task", "gate.max_accuracy_drop")):
    def run(self, ctx: StageContext) -> StageResult:
        import numpy as np

        from pipeline import runtimes
        from pipeline.library import calibration
        from pipeline.convert import openvino as ovc

        p: QuantizeOpenvinoConfig = ctx.params
        src = ctx.input
        data = ctx.data()
        if not p.accuracy_control:
            return self._with_remedies(ctx, data)
        calib = calibration.inputs(data, p.calibration_samples, ctx.settings.seed, ctx.name, "openvino", src.meta)
        points = p.max_accuracy_drop if p.max_accuracy_drop is not None else float(ctx.settings.gate.max_accuracy_drop)
        n = min(p.accuracy_control_samples, len(data.train_x))
        idx = np.random.default_rng(int(ctx.settings.seed) + 1).choice(len(data.train_x), n, replace=False)
        # an IR converted from ONNX names its operations after ONNX nodes: list the kept layers by torch module
        onnx_src = next((a for a in ctx.lineage(src.stage) if a.format == "onnx"), None)
        path, meta = ovc.accuracy_controlled_candidate(src.path, src.meta, calib,
                                                       runtimes.adapt_input("openvino", src.meta, data.train_x[idx]),
                                                       data.train_y[idx], ctx.workdir, points / 100.0,
                                                       layer_names=ovc.onnx_layer_names(onnx_src.path)
                                                       if onnx_src else None)
        q = meta["quantization"]
        q["calibration_input"] = calibration.describe(calib)
        kept = q["reverted_to_float"]
        ctx.log.info("quantized %s with accuracy control (max drop %.2f points on %d training images): plain int8 "
                     "drops %.2f, this one %.2f (%s); kept in float: %s", path.name, points, n,
                     100 * q["plain_int8_drop"], 100 * q["drop"], "within budget" if q["met"] else "BUDGET NOT MET",
                     ", ".join(kept) or "none")
        if not q["met"]:
            ctx.log.warning("NNCF could not bring the drop within %.2f points even with %d operations in float",
                            points, len(kept))
        return StageResult(Artifact(ctx.name, "openvino", "int8", path, meta),
                           metrics={"calibration_samples": p.calibration_samples,
                                    "quantized_operations": q["quantized_operations"],
                                    "layers_in_float": len(kept), "plain_int8_drop_points": 100 * q["plain_int8_drop"],
                                    "accuracy_control_drop_points": 100 * q["drop"]},
                           info={"kept_in_float": kept, "accuracy_control_met": q["met"],
                                 "plain_int8_top1": q["top1"]["int8"], "accuracy_controlled_top1": q["top1"]["int8_accuracy_control"]})

    def _with_remedies(self, ctx: StageContext, data) -> StageResult:
        """NNCF's post-training int8; outside parity's budget, the OpenVINO ladder of pipeline.convert.remedies."""
        from pipeline.library import calibration
        from pipeline.convert import openvino as ovc
        from pipeline.convert import remedies

        p: QuantizeOpenvinoConfig = ctx.params
        src, seed = ctx.input, int(ctx.settings.seed)
        judge, scorer, labels = remedies.judge_for(data, ctx.settings.task, seed, src, p.remedy_samples)
        onnx_src = next((a for a in ctx.lineage(src.stage) if a.format == "onnx"), None)

        def build(o: dict, d):
            n = remedies.calibration_count(o, p.calibration_samples, len(data.train_x))
            c = calibration.inputs(data, n, seed, ctx.name, "openvino", src.meta)
            if o.get("accuracy_control"):
                vx, vy = remedies.accuracy_control_data(data, seed, p.accuracy_control_samples, "openvino", src.meta)
                path, meta = ovc.accuracy_controlled_candidate(
                    src.path, src.meta, c, vx, vy, d, float(ctx.settings.gate.max_accuracy_drop) / 200.0,
                    layer_names=ovc.onnx_layer_names(onnx_src.path) if onnx_src else None)
            else:
                path, meta = ovc.int8_candidate(src.path, src.meta, c, d, o["preset"], o["fast_bias_correction"])
            meta["quantization"]["calibration_input"] = calibration.describe(c)
            return path, meta

        base = {"preset": p.preset, "fast_bias_correction": True}
        path, meta, report = remedies.climb("openvino", base, build, judge("openvino"), ctx.workdir, ctx.log,
                                            p.remedies, labels, scorer.describe())
        q = meta["quantization"]
        ctx.log.info("quantized %s: %s, %d operations in int8 (%d attempt(s), %s)", path.name, report["chosen"],
                     q["quantized_operations"], len(report["attempts"]),
                     "within budget" if report["met"] else "BUDGET NOT MET")
        return StageResult(Artifact(ctx.name, "openvino", "int8", path, meta),
                           metrics={"calibration_samples": q["calibration_samples"],
                                    "quantized_operations": q["quantized_operations"],
                                    "remedy_attempts": len(report["attempts"]), "within_budget": float(report["met"])},
                           info={"remedies": report})
