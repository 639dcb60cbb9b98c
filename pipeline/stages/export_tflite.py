"""`export_tflite` (PyTorch or Keras -> .tflite) and `quantize_tflite` (a .tflite -> int8, re-converted from the model
it was exported from).

PyTorch goes through litert-torch: fp32; fp16 (weights stored as float16 by ai-edge-quantizer's float casting);
full-integer int8 with its PT2E quantizer calibrated on N training images (int8 weights and activations, per-channel
weights); dynamic-range (int8 weights, activations quantized at run time). Keras goes through TensorFlow's
TFLiteConverter with the same four precisions (a representative dataset for int8). Every int8 file is then read back
from its flatbuffer: a float operator left inside fails the stage (`require_integer_only`), instead of being assumed away.

`convert_torch` and `convert_keras` are plain functions so that other stages (QAT, distillation ...) can reuse them.
"""
from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.artifacts import Artifact
from pipeline.stages.base import Stage, StageContext, StageResult

PRECISIONS = ("fp32", "fp16", "int8", "dynamic")
IO_TYPES = ("int8", "float")
SOURCE_FORMATS = ("torch", "keras")


@dataclass
class ExportTfliteConfig:
    precision: str = "fp32"  # fp32 | fp16 (float16 weights) | int8 (full integer, calibrated) | dynamic (int8 weights)
    calibration_samples: int = 128  # int8: training images used to calibrate activation ranges
    io: str = "int8"  # int8 models: int8 (integer input/output, scale and zero point in the file) | float
    per_channel: bool = True  # int8: one weight scale per output channel (keeps depthwise convolutions accurate)
    require_integer_only: bool = True  # int8: fail if any operator of the file still computes in float


@dataclass
class QuantizeTfliteConfig(ExportTfliteConfig):
    precision: str = "int8"  # int8 (full integer, calibrated) | dynamic (int8 weights) | fp16
    # Per-tensor weights by default here: a per-channel scale and zero point (12 bytes, for weights and biases) per
    # output channel is 0.4 MB of a 2.8 MB int8 MobileNetV2, and on the recipes' models it bought no accuracy (98.89%
    # and 97.49% either way, measured); `parity` and `evaluate` show what it costs on yours. true = TFLite's default.
    per_channel: bool = False


def check_params(p: ExportTfliteConfig) -> list[str]:
    problems = []
    if p.precision not in PRECISIONS:
        problems.append(f"precision must be one of {', '.join(PRECISIONS)}, got {p.precision!r}")
    if p.io not in IO_TYPES:
        problems.append(f"io must be int8 or float, got {p.io!r}")
    if p.calibration_samples <= 0:
        problems.append(f"calibration_samples must be > 0, got {p.calibration_samples}; 100-500 images is usual")
    return problems


@contextlib.contextmanager
def quiet_converters():
    """litert-torch and TensorFlow print progress bars and C++ logs on every conversion; keep the run log readable."""
    old = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")  # its per-pass progress lines (set =y to see them)
    loggers = [logging.getLogger(n) for n in ("absl", "tensorflow", "litert_torch", "root")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)
        if old is None:
            os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)
        else:
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = old


def calibration_set(data, n: int, seed: int, stage: str):
    """N training images drawn with the run's seed (the same rule as quantize_onnx, so backends see the same set)."""
    import numpy as np

    n_train = len(data.train_x)
    if n > n_train:
        raise ValueError(f"calibration_samples={n} is larger than the training split ({n_train} images); lower "
                         f"stages.{stage}.calibration_samples")
    rng = np.random.default_rng(seed)
    return data.train_x[rng.choice(n_train, n, replace=False)]


# --- PyTorch -> TFLite ------------------------------------------------------------------------------------------
def _export_for_pt2e(model, example):
    """torch.export for the PT2E quantizer. Strict (TorchDynamo) export first: it records which torch function each
    node came from, and the quantizer's annotators need that to quantize additions (residual connections) and
    concatenations; without it those stay in float."""
    import torch

    try:
        return torch.export.export(model, example, strict=True).module(), True
    except Exception:  # dynamo cannot trace every model: fall back to non-strict export and say so in the result
        return torch.export.export(model, example).module(), False


def convert_torch(model, example_input, path: Path, precision: str = "fp32", calibration=None, per_channel: bool = True,
                  io: str = "int8") -> dict[str, Any]:
    """Convert an eval-mode torch module to a .tflite file at `path`; returns facts for the artifact's metadata.

    example_input: one float32 NCHW array of batch 1. calibration: float32 NCHW array of images (int8 only)."""
    import torch
    import litert_torch

    model = model.eval()
    x = (torch.from_numpy(example_input),)
    facts: dict[str, Any] = {"converter": f"litert-torch {litert_torch.__version__}"}
    with quiet_converters():
        if precision in ("fp32", "fp16"):
            edge = litert_torch.convert(model, x)
            edge.export(str(path))
            if precision == "fp16":
                _fp16_weights(path)
                facts["converter"] += " + ai-edge-quantizer float16 weights"
        elif precision in ("int8", "dynamic"):
            from litert_torch.quantize import pt2e_quantizer, quant_config
            from torchao.quantization.pt2e import quantize_pt2e

            dynamic = precision == "dynamic"
            quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
                pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=per_channel, is_dynamic=dynamic))
            gm, strict = _export_for_pt2e(model, x)
            gm = quantize_pt2e.prepare_pt2e(gm, quantizer)
            if not dynamic:
                if calibration is None or not len(calibration):
                    raise ValueError("full-integer int8 needs calibration images")
                with torch.no_grad():  # the exported graph has batch 1
                    for i in range(len(calibration)):
                        gm(torch.from_numpy(calibration[i : i + 1]))
                facts["calibration_samples"] = int(len(calibration))
            gm = quantize_pt2e.convert_pt2e(gm, fold_quantize=False)
            edge = litert_torch.convert(gm, x, quant_config=quant_config.QuantConfig(pt2e_quantizer=quantizer))
            edge.export(str(path))
            facts.update(quantizer="litert-torch PT2EQuantizer (symmetric int8 weights"
                                   f"{', per channel' if per_channel else ''}; "
                                   f"{'dynamic activations' if dynamic else 'int8 activations, histogram calibration'})",
                         strict_export=strict)
            if not dynamic and io == "float":
                float_io(path)
        else:
            raise ValueError(f"unknown precision {precision!r}; one of {', '.join(PRECISIONS)}")
    return facts


def _fp16_weights(path: Path) -> None:
    """Store the weights of CONV/DEPTHWISE/FULLY_CONNECTED as float16 (DEQUANTIZE to float32 at load): TFLite's
    float16 quantization, half the size, float compute."""
    from ai_edge_quantizer import quantizer, recipe_manager
    from ai_edge_quantizer.algorithm_manager import AlgorithmName
    from ai_edge_quantizer.qtyping import TFLOperationName

    rm = recipe_manager.RecipeManager()
    rm.add_weight_only_config(regex=".*", operation_name=TFLOperationName.ALL_SUPPORTED, num_bits=16,
                              algorithm_key=AlgorithmName.FLOAT_CASTING)
    q = quantizer.Quantizer(str(path))
    q.load_quantization_recipe(rm.get_quantization_recipe())
    result = q.quantize()
    Path(path).write_bytes(bytes(result.quantized_model))


def float_io(path: Path) -> None:
    """Give a full-integer model float32 input and output: a QUANTIZE before the first operator and a DEQUANTIZE after
    the last, using the scale and zero point already in the file (what TFLiteConverter's inference_input_type=float32
    produces). litert-torch always emits integer I/O for a PT2E model."""
    from ai_edge_litert import schema_py_generated as fb
    from ai_edge_litert.tools import flatbuffer_utils as fbu

    model = fbu.read_model_from_bytearray(Path(path).read_bytes())
    g = model.subgraphs[0]

    def opcode(builtin: int) -> int:
        for i, c in enumerate(model.operatorCodes):
            if max(c.builtinCode, c.deprecatedBuiltinCode) == builtin:
                return i
        c = fb.OperatorCodeT()
        c.builtinCode, c.deprecatedBuiltinCode, c.version = builtin, min(builtin, 127), 1
        model.operatorCodes.append(c)
        return len(model.operatorCodes) - 1

    def float_twin(idx: int, suffix: str) -> int:
        src = g.tensors[idx]
        t = fb.TensorT()
        t.shape, t.type, t.buffer = list(src.shape), fb.TensorType.FLOAT32, 0
        t.name = (src.name.decode() if isinstance(src.name, bytes) else src.name) + suffix
        if src.shapeSignature is not None:
            t.shapeSignature = list(src.shapeSignature)
        g.tensors.append(t)
        return len(g.tensors) - 1

    def op(code: int, ins: list[int], outs: list[int]):
        o = fb.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = code, ins, outs
        return o

    remap = {}
    new_ops_front, new_ops_back = [], []
    for i, idx in enumerate(list(g.inputs)):
        f = float_twin(idx, "_float")
        new_ops_front.append(op(opcode(fb.BuiltinOperator.QUANTIZE), [f], [idx]))
        g.inputs[i] = f
        remap[idx] = f
    for i, idx in enumerate(list(g.outputs)):
        f = float_twin(idx, "_float")
        new_ops_back.append(op(opcode(fb.BuiltinOperator.DEQUANTIZE), [idx], [f]))
        g.outputs[i] = f
        remap[idx] = f
    g.operators = new_ops_front + list(g.operators) + new_ops_back
    for sig in model.signatureDefs or []:
        for t in list(sig.inputs or []) + list(sig.outputs or []):
            t.tensorIndex = remap.get(t.tensorIndex, t.tensorIndex)
    Path(path).write_bytes(bytes(fbu.convert_object_to_bytearray(model)))


# --- Keras -> TFLite --------------------------------------------------------------------------------------------
def convert_keras(model, path: Path, precision: str = "fp32", calibration=None, io: str = "int8",
                  per_channel: bool = True) -> dict[str, Any]:
    """TensorFlow's TFLiteConverter on a Keras model (NHWC input). calibration: float32 NHWC images (int8 only)."""
    import tensorflow as tf

    from io import StringIO

    # Keras 3 prints every captured tensor of the SavedModel it writes on the way: keep that out of the run's console
    with quiet_converters(), contextlib.redirect_stdout(StringIO()):
        conv = tf.lite.TFLiteConverter.from_keras_model(model)
        facts: dict[str, Any] = {"converter": f"tensorflow {tf.__version__} TFLiteConverter"}
        if precision != "fp32":
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
        if precision == "fp16":
            conv.target_spec.supported_types = [tf.float16]
        elif precision == "int8":
            if calibration is None or not len(calibration):
                raise ValueError("full-integer int8 needs a representative dataset")

            def representative():
                for i in range(len(calibration)):
                    yield [calibration[i : i + 1].astype("float32")]

            conv.representative_dataset = representative
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            conv._experimental_disable_per_channel = not per_channel
            facts.update(calibration_samples=int(len(calibration)),
                         quantizer="TFLiteConverter full integer (representative dataset, TFLITE_BUILTINS_INT8, "
                                   f"{'per-channel' if per_channel else 'per-tensor'} weights)")
        elif precision == "dynamic":
            facts["quantizer"] = "TFLiteConverter dynamic range (int8 weights)"
        flat = conv.convert()
        if precision == "int8" and io == "int8":
            # TF 2.21 with Keras 3 ignores inference_input_type/inference_output_type (its log says FLOAT32): take the
            # QUANTIZE/DEQUANTIZE off the edges the way the converter itself would
            from tensorflow.lite.python import util

            flat = util.modify_model_io_type(flat, tf.int8, tf.int8)
        Path(path).write_bytes(flat)
    return facts


# --- stages -----------------------------------------------------------------------------------------------------
class ExportTflite(Stage):
    type = "export_tflite"
    Config = ExportTfliteConfig
    accepts = SOURCE_FORMATS
    produces = "tflite"
    implements = ("export", "tflite")
    min_inputs = max_inputs = 1
    uses = ("data", "seed")
    libraries = ("litert-torch", "ai-edge-litert", "ai-edge-quantizer", "tensorflow-cpu", "torch", "torchao", "numpy")
    code = ("runtimes/tflite_rt.py", "models", "data")

    @classmethod
    def check(cls, p: ExportTfliteConfig, cfg) -> list[str]:
        return check_params(p)

    def source(self, ctx: StageContext) -> Artifact:
        return ctx.input

    def run(self, ctx: StageContext) -> StageResult:
        import numpy as np

        from pipeline.runtimes import tflite_rt

        p: ExportTfliteConfig = ctx.params
        src = self.source(ctx)
        path = ctx.workdir / f"model.{p.precision}.tflite"
        shape = src.meta["input_shape"]
        calib = calibration_set(ctx.data(), p.calibration_samples, ctx.cfg.seed, ctx.name) \
            if p.precision == "int8" else None
        if src.format == "torch":
            from pipeline.models import load_torch

            model, _ = load_torch(src.path)
            facts = convert_torch(model, np.zeros(shape, np.float32), path, p.precision, calib, p.per_channel, p.io)
            layout = "NCHW"
        else:
            from pipeline.models import keras_zoo

            model = keras_zoo.load(src.path)
            facts = convert_keras(model, path, p.precision,
                                  None if calib is None else calib.transpose(0, 2, 3, 1), p.io, p.per_channel)
            layout = "NHWC"
        info = tflite_rt.inspect(path)
        if p.precision == "int8" and p.require_integer_only and not info["integer_only"]:
            raise RuntimeError(
                f"the int8 .tflite still computes in float: {info['float_operators']} (read from the flatbuffer). "
                f"Set stages.{ctx.name}.require_integer_only=false to accept a mixed model")
        io_dtype = info["inputs"][0]["dtype"]
        meta = {**src.meta, "input_layout": layout, "source_format": src.format,
                "tflite": {**facts, **{k: info[k] for k in ("operators", "operator_count", "float_operators",
                                                           "integer_only", "inputs", "outputs")}}}
        if p.precision in ("int8", "dynamic"):
            meta["quantization"] = {"tool": facts.get("quantizer"), "precision": p.precision,
                                    "calibration_samples": facts.get("calibration_samples"),
                                    "per_channel": p.per_channel, "io": io_dtype}
        # a quick check that the file runs and agrees with its source (the parity stage does the full comparison)
        x = (ctx.data().val_x[:8]).astype(np.float32)
        got = tflite_rt.load(path, meta, threads=1).predict(x)
        from pipeline import runtimes

        ref = runtimes.load(src.format, src.path, src.meta, threads=1).predict(x)
        err = float(np.abs(ref - got).max())
        ctx.log.info("exported %s (%s, %d operators, %s; max |source - tflite| on 8 images = %.3g)", path.name,
                     p.precision, info["operator_count"],
                     "every operator integer" if info["integer_only"] else f"float operators {info['float_operators']}",
                     err)
        precision = {"dynamic": "int8-dynamic"}.get(p.precision, p.precision)
        return StageResult(Artifact(ctx.name, "tflite", precision, path, meta),
                           metrics={"export_max_abs_error": err, "float_operators": sum(info["float_operators"].values()),
                                    "operators": info["operator_count"]})


class QuantizeTflite(ExportTflite):
    """int8 from a .tflite's lineage: LiteRT's full-integer quantization re-converts the PyTorch/Keras model the fp32
    file was exported from (a .tflite cannot be re-quantized), so its input is the fp32 .tflite it must agree with."""

    type = "quantize_tflite"
    Config = QuantizeTfliteConfig
    accepts = ("tflite",)
    implements = ("quantize", "tflite")

    def source(self, ctx: StageContext) -> Artifact:
        for a in ctx.lineage(ctx.input.stage):
            if a.format in SOURCE_FORMATS:
                return a
        raise ValueError(f"{ctx.name}: no PyTorch or Keras model upstream of {ctx.input.stage!r}; LiteRT int8 "
                         f"re-converts from the source model, so its input must come from an export_tflite stage")
