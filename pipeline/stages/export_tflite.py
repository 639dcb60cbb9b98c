"""`export_tflite` (PyTorch or Keras -> .tflite) and `quantize_tflite` (a .tflite -> int8, re-converted from the model
it was exported from).

PyTorch goes through litert-torch: fp32; fp16 (weights stored as float16 by ai-edge-quantizer's float casting);
full-integer int8 with its PT2E quantizer calibrated on N training images (pipeline.convert.tflite_int8: int8 weights
and activations, per-channel weights, conv + ReLU6 observed after the clamp, hard-sigmoid rewritten so that it
quantizes); dynamic-range (int8 weights, activations quantized at run time). Keras goes through TensorFlow's
TFLiteConverter with the same four precisions (a representative dataset for int8). Every int8 file is then read back
from its flatbuffer: a float operator left inside fails the stage (`require_integer_only`), instead of being assumed away.
An int8 file outside parity's budget against its source gets the remedies of pipeline.convert.remedies, cheapest
first (per-channel weights, more calibration images, min-max calibration, 16x8), each reported.

The conversions are library functions in pipeline/convert/tflite.py.
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.core.artifacts import Artifact
from pipeline.core.bounds import one_of
from pipeline.convert.tflite import PRECISIONS, SOURCE_FORMATS
from pipeline.stages.base import Int8Config, Stage, StageContext, StageResult

IO_TYPES = ("int8", "float")


@dataclass
class ExportTfliteConfig(Int8Config):  # calibration and remedies: int8 only
    precision: one_of(*PRECISIONS) = "fp32"  # fp32 | fp16 (float16 weights) | int8 (full integer, calibrated) | dynamic (int8 weights)
    io: one_of(*IO_TYPES) = "int8"  # int8 models: int8 (integer input/output, scale and zero point in the file) | float
    per_channel: bool = True  # int8: one weight scale per output channel (keeps depthwise convolutions accurate)
    require_integer_only: bool = True  # int8: fail if any operator of the file still computes in float


@dataclass
class QuantizeTfliteConfig(ExportTfliteConfig):
    precision: one_of(*PRECISIONS) = "int8"  # int8 (full integer, calibrated) | dynamic (int8 weights) | fp16
    # Per-channel weights (TFLite's default): per-tensor saved 15% of the file on the digits MobileNetV2, but lost
    # most of the agreement of pretrained EfficientNet-Lite0 (0.15 top-1 agreement with fp32 in LiteRT, 0.25 in ONNX
    # Runtime; bench/RESULTS.md). false = per-tensor, smaller, for models that `parity` shows can afford it.
    per_channel: bool = True


# --- stages -----------------------------------------------------------------------------------------------------
class ExportTflite(Stage, type="export_tflite", config=ExportTfliteConfig, accepts=SOURCE_FORMATS, produces="tflite",
                   implements=("export", "tflite"), inputs=1, reads=("data", "seed", "task"),
                   libraries=("litert-torch", "ai-edge-litert", "ai-edge-quantizer", "tensorflow-cpu", "torchao")):
    @classmethod
    def check(cls, p: ExportTfliteConfig, cfg) -> list[str]:
        from pipeline import tasks

        return tasks.check_name(str(cfg.get("task", "classification")))

    @classmethod
    def calibrates(cls, p: ExportTfliteConfig) -> bool:
        return p.precision == "int8"  # fp32, fp16 and dynamic range calibrate nothing

    def source(self, ctx: StageContext) -> Artifact:
        return ctx.input

    def _convert(self, ctx: StageContext, src: Artifact, o: dict, d) -> tuple:
        """One .tflite of `src` in directory `d` with build options `o` (a remedy's or the recipe's); returns
        (path, meta). Calibration images are the source's own input (its signature applied; export_source turns them
        NHWC for a Keras source), as many as the options ask for."""
        import numpy as np

        from pipeline.convert import remedies
        from pipeline.library import calibration
        from pipeline.convert.tflite import export_source
        from pipeline.runtimes import tflite_rt

        p: ExportTfliteConfig = ctx.params
        data = ctx.data()
        path = d / f"model.{p.precision}.tflite"
        n = remedies.calibration_count(o, p.calibration_samples, len(data.train_x))
        calib = calibration.inputs(data, n, ctx.settings.seed, ctx.name, src.format, src.meta) \
            if p.precision == "int8" else None
        if src.format != "torch" and (o.get("scheme") or o.get("observer") != "histogram"):
            raise ValueError("this remedy converts PyTorch models (litert-torch); the source is a Keras model")
        if src.format == "torch" and p.precision == "int8":
            from pipeline.convert import tflite_int8
            from pipeline.models import load_torch

            model, _ = load_torch(src.path)
            example = np.zeros(src.meta["input_shape"], np.float32)
            if o.get("scheme") == "a16w8":
                facts = tflite_int8.convert_a16w8(model, example, path, calib)
            else:
                facts = tflite_int8.convert(model, example, path, calib, o["per_channel"], p.io, o["observer"])
            layout = "NCHW"
        else:
            facts, layout = export_source(src.format, src.path, src.meta["input_shape"], path, p.precision, calib,
                                          o["per_channel"], p.io)
        info = tflite_rt.inspect(path)
        if p.precision == "int8" and p.require_integer_only and not info["integer_only"]:
            raise RuntimeError(
                f"the int8 .tflite still computes in float: {info['float_operators']} (read from the flatbuffer). "
                f"Set stages.{ctx.name}.require_integer_only=false to accept a mixed model")
        meta = {**src.meta, "input_layout": layout, "source_format": src.format, "task": ctx.settings.task,
                "tflite": {**facts, **{k: info[k] for k in ("operators", "operator_count", "float_operators",
                                                           "integer_only", "inputs", "outputs")}}}
        if p.precision in ("int8", "dynamic"):
            meta["quantization"] = {"tool": facts.get("quantizer"), "precision": p.precision,
                                    "calibration_samples": facts.get("calibration_samples"),
                                    "per_channel": o["per_channel"], "io": info["inputs"][0]["dtype"]}
            if calib is not None:
                meta["quantization"]["calibration_input"] = calibration.describe(calib)
        return path, meta

    def run(self, ctx: StageContext) -> StageResult:
        import numpy as np

        from pipeline.convert import remedies

        p: ExportTfliteConfig = ctx.params
        src, data = self.source(ctx), ctx.data()
        build = lambda o, d: self._convert(ctx, src, o, d)
        base = {"per_channel": p.per_channel, "observer": "histogram"}
        report = None
        if p.precision == "int8":  # within parity's budget against the source, or the remedies are tried
            judge, scorer, labels = remedies.judge_for(data, ctx.settings.task, int(ctx.settings.seed), src,
                                                       p.remedy_samples)
            path, meta, report = remedies.climb("tflite", base, build, judge("tflite"), ctx.workdir, ctx.log,
                                                p.remedies, False, scorer.describe())
        else:
            path, meta = build(base, ctx.workdir)
        info = meta["tflite"]
        # a quick check that the file runs and agrees with its source on every output (the parity stage does the
        # full comparison)
        from pipeline import runtimes

        x = (ctx.data().val_x[:8]).astype(np.float32)
        got = runtimes.outputs_of(runtimes.load("tflite", path, meta, threads=1), x)
        ref = runtimes.outputs_of(runtimes.load(src.format, src.path, src.meta, threads=1), x)
        if len(got) != len(ref) or any(g.shape != r.shape for g, r in zip(got, ref)):
            raise RuntimeError(f"the .tflite gives outputs {[list(g.shape) for g in got]} but its source "
                               f"{src.stage!r} gives {[list(r.shape) for r in ref]}: the conversion changed the "
                               f"model's outputs")
        err = float(max(np.abs(r - g).max() for r, g in zip(ref, got)))
        ctx.log.info("exported %s (%s, %d operators, %s; max |source - tflite| on 8 images = %.3g)", path.name,
                     p.precision, info["operator_count"],
                     "every operator integer" if info["integer_only"] else f"float operators {info['float_operators']}",
                     err)
        precision = {"dynamic": "int8-dynamic"}.get(p.precision, p.precision)
        return StageResult(Artifact(ctx.name, "tflite", precision, path, meta),
                           metrics={"export_max_abs_error": err, "float_operators": sum(info["float_operators"].values()),
                                    "operators": info["operator_count"],
                                    **({"remedy_attempts": len(report["attempts"]), "within_budget": float(report["met"])}
                                       if report else {})},
                           info={"remedies": report} if report else {})


class QuantizeTflite(ExportTflite, type="quantize_tflite", config=QuantizeTfliteConfig, accepts=("tflite",),
                     implements=("quantize", "tflite")):
    """int8 from a .tflite's lineage: LiteRT's full-integer quantization re-converts the PyTorch/Keras model the fp32
    file was exported from (a .tflite cannot be re-quantized), so its input is the fp32 .tflite it must agree with."""

    @classmethod
    def check_lineage(cls, p, upstream, cfg) -> list[str]:
        from pipeline.stages.base import needs_source

        return needs_source(upstream, SOURCE_FORMATS,
                            "LiteRT int8 re-converts the PyTorch or Keras model the .tflite was exported from",
                            "export it with {type: export_tflite, precision: int8, inputs: [<the import>]}")

    def source(self, ctx: StageContext) -> Artifact:
        for a in ctx.lineage(ctx.input.stage):
            if a.format in SOURCE_FORMATS:
                return a
        raise ValueError(f"{ctx.name}: no PyTorch or Keras model upstream of {ctx.input.stage!r}; LiteRT int8 "
                         f"re-converts from the source model, so its input must come from an export_tflite stage")
