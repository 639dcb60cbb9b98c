"""Accelerator coverage: which operators of an artifact the device's delegate runs, and which fall back to the CPU,
from each delegate's documented operator and precision support (sources below). Imports no ML framework.

Operators are in TFLite's vocabulary (profiler.py maps ONNX graphs onto it), so one table serves every format.
Where the table is not the vendor's own, `source` says so.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.devices.profiler import Layer

_CNN_CORE = {"ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED",
             "LOGISTIC", "MAX_POOL_2D", "MUL", "PAD", "RELU", "RELU6", "RESHAPE", "SOFTMAX", "SUB"}
# BatchNorm is folded into the convolution by every converter (TFLite, Core ML, TensorRT): it never reaches a delegate.
FOLDED = {"BATCH_NORM", "IDENTITY"}


@dataclass(frozen=True)
class Delegate:
    name: str  # shown to the user
    ops: frozenset[str]
    precisions: frozenset[str]  # precisions of operators it runs
    prefix_only: bool  # True: the graph is cut at the first unsupported op, everything after runs on the CPU
    source: str


DELEGATES: dict[str, Delegate] = {
    "gpu": Delegate(
        "TFLite GPU delegate",
        frozenset(_CNN_CORE | {"EXP", "LOGICAL_AND", "LSTM", "MAXIMUM", "MINIMUM", "PRELU", "RESIZE_BILINEAR",
                               "STRIDED_SLICE", "TRANSPOSE_CONV"}),
        frozenset({"fp32", "fp16", "int8"}), False,
        "LiteRT 'GPU delegates' page, supported ops (16/32-bit float) and quantized-model support "
        "(int8 models run dequantized): tensorflow.org/lite/performance/gpu"),
    "nnapi": Delegate(
        "Android NNAPI",
        frozenset(_CNN_CORE | {"BATCH_TO_SPACE_ND", "DEPTH_TO_SPACE", "DEQUANTIZE", "DIV", "EXP", "FLOOR",
                               "HARD_SWISH", "L2_NORMALIZATION", "LOCAL_RESPONSE_NORMALIZATION", "MAXIMUM", "MEAN",
                               "MINIMUM", "PRELU", "QUANTIZE", "RELU_N1_TO_1", "RESIZE_BILINEAR",
                               "RESIZE_NEAREST_NEIGHBOR", "SPACE_TO_BATCH_ND", "SPACE_TO_DEPTH", "SQUEEZE",
                               "STRIDED_SLICE", "TANH", "TRANSPOSE", "TRANSPOSE_CONV", "CAST", "ABS", "SQRT",
                               "GATHER", "SPLIT", "REDUCE_MAX", "LEAKY_RELU", "BATCH_MATMUL"}),
        frozenset({"fp32", "fp16", "int8"}), False,
        "Android NDK Neural Networks API operation list (ANEURALNETWORKS_*, API 27-30) as mapped by the TFLite "
        "NNAPI delegate; NNAPI is deprecated from Android 15 and the vendor driver may still refuse an op"),
    "edgetpu": Delegate(
        "Edge TPU",
        frozenset({"ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "EXPAND_DIMS",
                   "FULLY_CONNECTED", "L2_NORMALIZATION", "LOGISTIC", "LSTM", "MAXIMUM", "MAX_POOL_2D", "MEAN",
                   "MINIMUM", "MUL", "PACK", "PAD", "PRELU", "QUANTIZE", "REDUCE_MAX", "REDUCE_MIN", "RELU", "RELU6",
                   "RELU_N1_TO_1", "RESHAPE", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "RSQRT", "SLICE",
                   "SOFTMAX", "SPACE_TO_DEPTH", "SPLIT", "SQUARED_DIFFERENCE", "SQUEEZE", "STRIDED_SLICE", "SUB",
                   "SUM", "TANH", "TRANSPOSE", "TRANSPOSE_CONV"}),
        frozenset({"int8"}), True,
        "coral.ai/docs/edgetpu/models-intro 'Supported operations': int8 (full-integer) tensors only, static "
        "shapes; the compiler maps one subgraph, so every op after the first unsupported one runs on the CPU"),
    "coreml_ane": Delegate(
        "Core ML Neural Engine",
        frozenset(_CNN_CORE | {"HARD_SWISH", "MEAN", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "TANH",
                               "TRANSPOSE_CONV", "PRELU", "LEAKY_RELU", "CLIP", "RELU_N1_TO_1", "MAXIMUM",
                               "MINIMUM", "BATCH_MATMUL", "TRANSPOSE", "STRIDED_SLICE"}),
        frozenset({"fp16", "fp32", "int8"}), False,
        "unofficial: Apple publishes no Neural Engine operator list; common CNN layers per community "
        "measurements (github.com/hollance/neural-engine). The Neural Engine computes in fp16 (fp32 models are "
        "converted), int8 weights are decompressed (A17 Pro adds int8 activations)"),
    "tensorrt": Delegate(
        "TensorRT",
        frozenset(_CNN_CORE | {"BATCH_MATMUL", "CLIP", "DIV", "EXP", "HARD_SWISH", "LEAKY_RELU", "MAXIMUM", "MEAN",
                               "MINIMUM", "PRELU", "REDUCE_MAX", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR",
                               "RELU_N1_TO_1", "SQRT", "STRIDED_SLICE", "TANH", "TRANSPOSE", "TRANSPOSE_CONV",
                               "GATHER", "SPLIT", "CAST", "SHAPE", "SQUEEZE", "EXPAND_DIMS", "QUANTIZE",
                               "DEQUANTIZE"}),
        frozenset({"fp32", "fp16", "int8"}), False,
        "onnx-tensorrt operators.md (ONNX operators TensorRT parses; int8 through Q/DQ explicit quantization)"),
}


def coverage(layers: list[Layer], delegate: str) -> dict[str, Any] | None:
    """Which operators the delegate runs. None when the device has no accelerator delegate."""
    if delegate in (None, "none"):
        return None
    d = DELEGATES[delegate]
    ops, cut = [], None
    for l in layers:
        if l.op in FOLDED:
            continue
        reason = None
        if l.op not in d.ops:
            reason = f"{l.op} is not in the {d.name}'s documented operator list"
        elif l.precision not in d.precisions:
            reason = f"{l.precision} tensors: the {d.name} runs {'/'.join(sorted(d.precisions))} only"
        if reason is None and cut is not None:
            reason = f"after {cut}, the first unsupported op: the {d.name} runs one subgraph only"
        if reason and d.prefix_only and cut is None:
            cut = l.name
        ops.append({"name": l.name, "op": l.op, "precision": l.precision, "on": "cpu" if reason else "accelerator",
                    **({"reason": reason} if reason else {})})
    on_cpu = [o for o in ops if o["on"] == "cpu"]
    n, k = len(ops), len(ops) - len(on_cpu)
    names = sorted({o["op"] for o in on_cpu})
    summary = f"{d.name}: {k}/{n} ops" + (f", {len(on_cpu)} on CPU: {', '.join(names)}" if on_cpu else ", none on CPU")
    return {"delegate": d.name, "supported": k, "total": n, "on_cpu": len(on_cpu), "cpu_ops": names,
            "summary": summary, "source": d.source, "ops": ops}
