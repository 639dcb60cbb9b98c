"""PyTorch or Keras -> .tflite: litert-torch for PyTorch (fp32; fp16 weights by ai-edge-quantizer's float casting;
full-integer int8 with its PT2E quantizer; dynamic-range), TensorFlow's TFLiteConverter for Keras (the same four
precisions, a representative dataset for int8). Library functions: export_tflite, quantize_tflite, select_int8 and
qat call them. Every int8 file is read back from its flatbuffer by the callers (pipeline.runtimes.tflite_rt.inspect).
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

SOURCE_FORMATS = ("torch", "keras")
PRECISIONS = ("fp32", "fp16", "int8", "dynamic")


def quiet_converters():
    """litert-torch and TensorFlow print progress bars and C++ logs on every conversion; keep the run log readable."""
    from pipeline.core.console import quiet

    return quiet(("absl", "tensorflow", "litert_torch", "root"), env={"TF_CPP_MIN_LOG_LEVEL": "3"},
                 keep_env={"LITERT_TORCH_SHOW_PROGRESS": "n"})  # its per-pass progress lines (set =y to see them)


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


def export_source(fmt: str, src: Path, input_shape, out: Path, precision: str, calibration=None,
                  per_channel: bool = True, io: str = "int8") -> tuple[dict, str]:
    """Convert the PyTorch or Keras model file `src` to `out`; returns (conversion facts, input layout).
    `calibration`: NCHW training images for int8."""
    import numpy as np

    if fmt == "torch":
        from pipeline.models import load_torch

        model, _ = load_torch(src)
        return convert_torch(model, np.zeros(input_shape, np.float32), out, precision, calibration, per_channel,
                             io), "NCHW"
    if fmt == "keras":
        from pipeline.models import keras_zoo

        model = keras_zoo.load(src)
        nhwc = None if calibration is None else calibration.transpose(0, 2, 3, 1)
        return convert_keras(model, out, precision, nhwc, io, per_channel), "NHWC"
    raise ValueError(f"cannot convert a {fmt} model to TFLite (sources: {', '.join(SOURCE_FORMATS)})")
