"""What the latency model sees of a network: a few work counts summed over its fused kernels, at the precision the
unit computes in. Imports no ML framework.

The counts (FEATURES): one per inference (launch and synchronisation), the number of fused kernels (per-kernel
dispatch), multiply-accumulates of regular convolutions, of depthwise convolutions and of fully connected / matrix
products (different units or efficiencies on every accelerator), elements touched by the memory-bound kernels
(element-wise, pooling, normalisation, softmax ...), and weight and activation bytes at the compute precision.
Each is divided by a fixed SCALE so that the fitted coefficients are milliseconds per "unit" of comparable size.
"""
from __future__ import annotations

from pipeline.devices.kernels import Kernel, kernels

FEATURES = ("inference", "kernels", "conv_macs", "depthwise_macs", "matmul_macs", "elementwise", "weight_bytes",
            "activation_bytes")
SCALE = (1.0, 100.0, 1e9, 1e8, 1e8, 1e7, 1e7, 1e8)
# bytes per weight and per activation element of each compute precision
PRECISION_BYTES = {"fp32": (4, 4), "fp16": (2, 2), "int8": (1, 1), "w8a16": (1, 2)}
MATMUL = {"FULLY_CONNECTED", "BATCH_MATMUL"}


def compute_precision(kind: str, precision: str) -> str:
    """The class a measurement or artifact of `precision` computes in on a unit of `kind`: a float model runs in fp32
    on a CPU and in fp16 on the GPUs and NPUs of the corpus (Qualcomm AI Hub's "float" jobs; LiteRT's GPU delegate
    with precision loss allowed)."""
    if precision in ("float", "fp32", "int8-weights"):
        return "fp32" if kind == "cpu" else "fp16"
    if precision == "fp16":
        return "fp32" if kind == "cpu" else "fp16"
    return precision


def kernel_counts(k: Kernel, precision: str) -> list[float]:
    """One kernel's counts (unscaled), its bytes re-sized from the fp32 baseline profile to `precision`."""
    wb, ab = PRECISION_BYTES[precision]
    conv = k.macs if k.klass == "conv" and k.anchor not in MATMUL else 0
    mm = k.macs if k.anchor in MATMUL else 0
    dw = k.macs if k.klass == "depthwise" else 0
    elem = max(k.elements, k.macs) if k.klass == "memory" else 0  # a pooling kernel reads more than it writes
    return [0.0, 1.0, conv, dw, mm, elem, k.weight_bytes * wb / 4, k.activation_bytes * ab / 4]


def per_kernel(profile, precision: str) -> list[tuple[Kernel, list[float]]]:
    """(kernel, scaled counts) for every kernel that does any work; the per-inference count is 0 here."""
    base = profile if profile.precision == "fp32" and all(l.precision == "fp32" for l in profile.layers) \
        else profile.with_precision("fp32")
    out = []
    for k in kernels(base.layers):
        if k.activation_bytes == 0 and k.macs == 0 and k.weight_bytes == 0:
            continue
        out.append((k, [c / s for c, s in zip(kernel_counts(k, precision), SCALE)]))
    return out


def vector(profile, precision: str) -> list[float]:
    """The network's scaled counts at `precision` (FEATURES order)."""
    rows = [c for _, c in per_kernel(profile, precision)]
    total = [sum(col) for col in zip(*rows)] if rows else [0.0] * len(FEATURES)
    total[0] = 1.0 / SCALE[0]
    return total
