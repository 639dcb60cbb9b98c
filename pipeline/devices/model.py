"""The latency model and its fitted parameters (calibration.json). Imports no ML framework.

For a network with scaled work counts x (features.py) on a device d, unit kind k, runtime r, compute precision p:

    latency_ms = exp(a[d, p] + b[k, r, p]) * sum_j theta[k, p, j] * x_j

theta (ms per unit of each count, >= 0) is the kind's cost shape, fitted on every measured network; b is the runtime's
factor against the kind's reference runtime; a is the device's speed factor. Where a comes from decides how far the
estimate is trusted (its `basis`, each with its own held-out residuals, validation.py):
- fitted: the device has measurements of >= FITTED_FAMILIES architectures in the fit; a new network on it is a
  leave-model-out case;
- anchor: fewer (typically one reference network per precision): a leave-device-out case with one anchor;
- spec: no measurement; a = c[k, p] - log(peak ops/s of the unit at p for the threads used), c fitted across the
  measured devices with a published peak (CPUs only: the corpus' NPU and GPU peaks are unpublished);
and a runtime with no measurement on the kind takes the mean factor of the kind's runtimes (basis "runtime unseen").
"""
from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Any

CALIBRATION = Path(__file__).resolve().parent / "calibration.json"
FITTED_FAMILIES = 5  # architectures measured on a device before its factor counts as fitted rather than anchored
MIN_RUNTIME_ROWS = 5  # a runtime measured fewer times on a kind is treated as unseen (its factor rests on too little)
SPEC_KINDS = ("cpu",)  # kinds estimated from a spec sheet: the corpus' NPU/GPU peaks are unpublished or marketing
# The deployment runtime (conf/device/*.yaml `runtime`) -> runtime of the latency model, per unit kind. LiteRT runs
# XNNPACK on the CPU since TensorFlow Lite 2.3 (2020); on a Qualcomm NPU it is TFLite with the QNN delegate.
RUNTIMES = {"cpu": {"litert": "xnnpack", "onnxruntime": "onnxruntime", "coreml": "coreml", "openvino": "openvino",
                    "executorch": "xnnpack"},
            "gpu": {"litert": "gpu-delegate", "onnxruntime": "onnxruntime", "coreml": "coreml",
                    "openvino": "openvino", "executorch": "executorch"},
            "npu": {"litert": "tflite", "onnxruntime": "onnxruntime", "coreml": "coreml", "openvino": "openvino",
                    "executorch": "executorch"},
            "edgetpu": {"litert": "edgetpu"}}


@lru_cache(maxsize=1)
def _text() -> str:
    return CALIBRATION.read_text() if CALIBRATION.exists() else "{}"


def calibration() -> dict[str, Any]:
    """calibration.json: per unit kind its fitted parameters, residual sets and validation figures."""
    return json.loads(_text())


def reload() -> None:
    _text.cache_clear()


def cost(theta: list[float], x: list[float]) -> float:
    return sum(t * v for t, v in zip(theta, x))


def runtime_factor(kf: dict, runtime: str, precision: str, device: str | None = None) -> tuple[float, bool]:
    """(log factor, seen): the runtime's factor at `precision`, or, for a runtime measured fewer than
    MIN_RUNTIME_ROWS times on the kind, the mean of the kind's well-measured runtimes. A device measured in that
    runtime and precision keeps its factor whatever the count (its own factor was fitted together with it)."""
    rt, rows = kf["runtimes"], kf.get("runtime_rows", {})
    own = device is not None and runtime in kf.get("device_runtimes", {}).get(device, {}).get(precision, [])
    if precision in rt.get(runtime, {}) and (own or sum(rows.get(runtime, {}).values()) >= MIN_RUNTIME_ROWS):
        return rt[runtime][precision], True
    known = [v[precision] for r, v in rt.items() if precision in v and sum(rows.get(r, {}).values()) >= MIN_RUNTIME_ROWS]
    return (sum(known) / len(known) if known else 0.0), False


def device_factor(kf: dict, device: str, precision: str, peak_gops: float | None) -> tuple[float | None, str]:
    """(log factor, basis) of a device at `precision`: fitted / anchor from its own measurements, spec from its
    peak, (None, why) when neither exists."""
    dev = kf["devices"].get(device, {})
    if precision in dev:
        fam = kf.get("device_families", {}).get(device, {}).get(precision, 0)
        return dev[precision], ("fitted" if fam >= FITTED_FAMILIES else "anchor")
    c = kf.get("spec", {}).get(precision)
    if c is not None and peak_gops and kf.get("kind") in SPEC_KINDS:
        return c - math.log(peak_gops), "spec"
    return None, ""


def predict(kf: dict, x: list[float], precision: str, a: float, b: float) -> float:
    return math.exp(a + b) * cost(kf["theta"][precision], x)


def peak_precision(kind: str, precision: str) -> str:
    """Which of a unit's published peaks bounds a compute precision (w8a16 on a CPU runs its 16-bit activations
    through float kernels: ONNX Runtime has no int16 convolution)."""
    if precision == "w8a16":
        return "fp32" if kind == "cpu" else "int8"
    return precision


def effective_peak(unit: Any, precision: str, threads: int | None) -> float | None:
    """The unit's published peak G ops/s at `precision` for the cores `threads` keep busy (CPU), or None."""
    from pipeline.devices.catalog import figure_value

    kind = unit.get("kind")
    peak = figure_value((unit.get("peak_gops") or {}).get(peak_precision(kind, precision)))
    if peak is None:
        return None
    if kind == "cpu":
        cores = int(unit.get("cores") or 1)
        t = cores if not threads else min(int(threads), cores)
        peak *= t / cores
    return peak
