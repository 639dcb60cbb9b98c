"""Fused kernels: the operators of a profile grouped the way the runtimes execute them (in the spirit of nn-Meter,
MobiSys 2021: detect the runtime's fusion, then cost each fused kernel). Imports no ML framework.

Conv/FC/pool + BatchNorm + activation fuse (TFLite fused activations, BN folding; ONNX Runtime Conv+activation);
reshapes cost nothing; a PAD or TRANSPOSE feeding a single operator is absorbed into it (XNNPACK folds explicit padding
into the convolution; layout transposes of converted graphs are absorbed), so the ONNX and TFLite profiles of a
network give the same kernels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from pipeline.devices.profiler import NO_COST, Layer

ANCHORS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL", "TRANSPOSE_CONV",
           "AVERAGE_POOL_2D", "MAX_POOL_2D", "MEAN"}
# Folded into the preceding kernel by TFLite (fused activation, BN folding) and ONNX Runtime (Conv+activation).
FUSIBLE = {"BATCH_NORM", "RELU", "RELU6", "RELU_N1_TO_1", "CLIP", "TANH", "LEAKY_RELU"}
COMPUTE_CLASS = {"CONV_2D": "conv", "TRANSPOSE_CONV": "conv", "FULLY_CONNECTED": "conv", "BATCH_MATMUL": "conv",
                 "DEPTHWISE_CONV_2D": "depthwise"}
# Absorbed into the single operator they feed (XNNPACK fuses PAD into CONV_2D/DEPTHWISE_CONV_2D; converters' NCHW<->NHWC
# transposes are folded into the consumer's layout): no kernel of their own.
PREFIX_FUSIBLE = {"PAD", "TRANSPOSE"}
@dataclass
class Kernel:
    name: str  # first operator's name
    ops: list[str]  # operator names fused into it
    op_types: list[str]
    klass: str  # conv | depthwise | memory (elementwise, pooling, softmax ...)
    macs: int
    elements: int  # output elements (work of memory-bound kernels)
    weight_bytes: int
    activation_bytes: int
    precision: str
    dw_kernel: int = 0  # depthwise: kernel size (3, 5 ...)
    anchor: str = ""  # the operator the kernel is built around (after any absorbed PAD/TRANSPOSE)


def kernels(layers: list[Layer]) -> list[Kernel]:
    """Group operators into fused kernels: an anchor absorbs following fusible ops that read only its output and whose
    input no other operator reads; no-cost ops (reshape) are folded into the kernel that produced their input; a PAD or
    TRANSPOSE read by exactly one operator is absorbed into that operator's kernel."""
    consumers: dict[str, int] = {}
    readers: dict[str, list[Layer]] = {}
    for l in layers:
        for i in l.inputs:
            consumers[i] = consumers.get(i, 0) + 1
            readers.setdefault(i, []).append(l)
    out: list[Kernel] = []
    owner: dict[str, Kernel] = {}  # layer name -> kernel holding it
    absorbed: dict[str, list[Layer]] = {}  # layer name -> PAD/TRANSPOSE layers waiting for it
    for l in layers:
        rd = readers.get(l.name, [])
        if l.op in PREFIX_FUSIBLE and len(rd) == 1:
            absorbed.setdefault(rd[0].name, []).extend([*absorbed.pop(l.name, []), l])
            continue
        prefix = absorbed.pop(l.name, [])
        prev = owner.get(l.inputs[0]) if len(l.inputs) == 1 else None
        tail_ok = prev is not None and prev.ops[-1] == l.inputs[0] and consumers.get(l.inputs[0], 0) == 1
        if l.op in NO_COST and prev is not None and not prefix:
            prev.ops.append(l.name)
            prev.op_types.append(l.op)
            owner[l.name] = prev
            continue
        if l.op in FUSIBLE and tail_ok and (prev.anchor in ANCHORS) and not prefix:
            prev.ops.append(l.name)
            prev.op_types.append(l.op)
            # the fused kernel writes the activation's output instead of the anchor's (same size): bytes unchanged
            owner[l.name] = prev
            continue
        k = Kernel(name=l.name, ops=[*(p.name for p in prefix), l.name], op_types=[*(p.op for p in prefix), l.op],
                   klass=COMPUTE_CLASS.get(l.op, "memory"), macs=l.macs, elements=l.output_elements,
                   weight_bytes=l.weight_bytes, activation_bytes=l.input_bytes + l.output_bytes, precision=l.precision,
                   anchor=l.op)
        if l.op in NO_COST:
            k.activation_bytes = 0
        if k.klass == "depthwise" and l.output_elements:
            k.dw_kernel = int(round(math.sqrt(l.macs / l.output_elements)))  # MACs per output = kh x kw
        out.append(k)
        owner[l.name] = k
    return out
