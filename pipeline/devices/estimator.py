"""Latency estimate of a profiled model on a device's compute unit. An estimate, never a measurement.

Method (in the spirit of nn-Meter, MobiSys 2021): operators are grouped into the kernels the runtime fuses
(Conv/FC/pool + BatchNorm + activation; reshapes cost nothing); each kernel takes
    max(compute time, memory time) + a per-kernel overhead
where compute time = ops / (peak ops/s x efficiency) and memory time = bytes / (bandwidth x efficiency). The
efficiencies and overheads are fitted per compute-unit kind to the published measurements listed in
pipeline/devices/SOURCES.md plus the measurements of the store (`python -m pipeline.devices.fit` rewrites
calibration.json). What the model knows beyond a roofline:
- runtime generation: the TFLite kernels of 2019 and XNNPACK (default since 2020) differ on the same phone; a point
  says which it was measured with, and the XNNPACK/ONNX Runtime factors are fitted (prior: the published averages);
- threads scale sub-linearly (a fitted serial fraction per kind), the memory bandwidth is shared by all threads;
- int8 efficiency is fitted separately for cores with and without int8 dot-product instructions;
- PAD and TRANSPOSE feeding a single operator are fused into it (XNNPACK folds explicit padding into the convolution;
  layout transposes of converted graphs are absorbed), so the ONNX and TFLite profiles of a network agree;
- depthwise convolutions have one efficiency for 3x3 and one for 5x5 and larger kernels;
- an NPU with a published peak gets a compute term; one without is estimated from memory traffic (and says so).
Every estimate carries an empirical 80% interval taken from the leave-one-out residuals of the fit (labelled so), and
the points it was fitted on.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from pipeline.devices.catalog import figure_value
from pipeline.devices.profiler import NO_COST, Layer, Profile

CALIBRATION = Path(__file__).resolve().parent / "calibration.json"
ANCHORS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL", "TRANSPOSE_CONV",
           "AVERAGE_POOL_2D", "MAX_POOL_2D", "MEAN"}
# Folded into the preceding kernel by TFLite (fused activation, BN folding) and ONNX Runtime (Conv+activation).
FUSIBLE = {"BATCH_NORM", "RELU", "RELU6", "RELU_N1_TO_1", "CLIP", "TANH", "LEAKY_RELU"}
COMPUTE_CLASS = {"CONV_2D": "conv", "TRANSPOSE_CONV": "conv", "FULLY_CONNECTED": "conv", "BATCH_MATMUL": "conv",
                 "DEPTHWISE_CONV_2D": "depthwise"}
# Absorbed into the single operator they feed (XNNPACK fuses PAD into CONV_2D/DEPTHWISE_CONV_2D; converters' NCHW<->NHWC
# transposes are folded into the consumer's layout): no kernel of their own.
PREFIX_FUSIBLE = {"PAD", "TRANSPOSE"}
# Default (prior) parameters, used before fitting and as the regularisation target of the fit. g_*: speed-up of a
# runtime generation over the 2019 TFLite kernels, priors from the published averages: XNNPACK fp32 2.3x (TensorFlow
# blog, 2020-07-24), XNNPACK int8 1.3x on ARM64 phones (TensorFlow blog, 2021-09-09); ONNX Runtime starts at XNNPACK's.
PRIOR = {"e_fp32": 0.3, "e_fp16": 0.3, "e_int8": 0.3, "e_int8_dot": 0.3, "e_int8_nodot": 0.3, "f_dw": 0.3,
         "f_dw3": 0.3, "f_dw5": 0.3, "e_mem": 0.5, "overhead_us": 5.0, "thread_s": 0.05,
         "g_fp32_xnnpack": 2.3, "g_int8_xnnpack": 1.3, "g_fp32_onnxruntime": 2.3, "g_int8_onnxruntime": 1.3}
GENERATIONS = ("tflite-2019", "xnnpack", "onnxruntime")
# The deployment runtime's CPU generation today (conf/device/*.yaml `runtime`).
RUNTIME_GENERATION = {"litert": "xnnpack", "onnxruntime": "onnxruntime", "coreml": "xnnpack"}


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


@lru_cache(maxsize=1)
def _calibration_file() -> str:
    return CALIBRATION.read_text() if CALIBRATION.exists() else "{}"


def calibration() -> dict[str, Any]:
    """Fitted parameters per unit kind plus their expected errors (calibration.json)."""
    return json.loads(_calibration_file())


def unit_precision(unit: Any, precision: str) -> tuple[str | None, str]:
    """Which of the unit's precisions an artifact of `precision` runs in, and why (documented runtime behaviour)."""
    peaks = dict(unit.get("peak_gops") or {})
    want = {"int8-weights": "fp32", "fp16": "fp16"}.get(precision, precision)
    if want in peaks:
        return want, ""
    kind = unit.get("kind")
    if want == "fp16" and "fp32" in peaks and kind == "cpu":
        return "fp32", "fp16 weights are computed in fp32 on the CPU"
    if want == "int8" and kind == "gpu":
        # LiteRT's GPU delegate runs quantized models dequantized (tensorflow.org/lite/performance/gpu)
        run = "fp16" if "fp16" in peaks else "fp32" if "fp32" in peaks else None
        if run:
            return run, f"the GPU delegate runs int8 models dequantized, in {run}"
        return None, ("the GPU delegate runs int8 models dequantized, and this GPU lists no fp16/fp32 figure: "
                      "estimate it on the CPU instead (profile unit=cpu)")
    if want in ("fp32", "int8") and "fp16" in peaks and kind in ("gpu", "npu"):
        return "fp16", f"the {kind.upper()} runs {want} models in fp16"
    if want == "fp32" and "fp16" not in peaks and "fp32" not in peaks:
        return None, f"runs {'/'.join(peaks)} only; a {precision} model cannot run there (convert it first)"
    return None, f"the unit has no {want} figure (it lists {', '.join(peaks) or 'none'})"


def params_for(kind: str, calib: dict | None = None) -> tuple[dict[str, float], dict[str, Any]]:
    """Fitted parameters for a unit kind (falling back as calibration.json says) and the provenance/error info."""
    calib = calibration() if calib is None else calib
    kinds = calib.get("kinds", {})
    entry = kinds.get(kind)
    info: dict[str, Any] = {"kind": kind, "pooled_log_residuals": calib.get("pooled_log_residuals") or []}
    if entry is None or entry.get("borrow"):
        src = (entry or {}).get("borrow") or "cpu"
        base = kinds.get(src, {})
        info.update(calibrated=False, borrowed_from=src, log_residuals=[],
                    note=f"no published measurement for a {kind} in the calibration set: parameters borrowed from "
                         f"the {src} fit, error unknown")
        return {**PRIOR, **base.get("params", {})}, info
    info.update(calibrated=True, expected_error_pct=entry.get("expected_error_pct"), points=entry.get("points"),
                log_residuals=entry.get("loo_log_residuals") or [], fitted_on=entry.get("fitted_on") or [])
    return {**PRIOR, **entry.get("params", {})}, info


def interval(latency_ms: float, residuals: list[float], level: float = 0.8) -> tuple[float, float] | None:
    """Empirical `level` interval of the truth around an estimate from leave-one-out log residuals
    log(published / estimate): the order statistics a split-conformal interval takes (floor/ceil of (n+1) x the
    tail levels), clamped to the extremes when there are too few residuals for the level (then it is too narrow)."""
    r = sorted(residuals)
    n = len(r)
    if n < 2:
        return None
    a = (1 - level) / 2
    lo_i = max(1, math.floor(a * (n + 1)))
    hi_i = min(n, math.ceil((1 - a) * (n + 1)))
    return latency_ms * math.exp(r[lo_i - 1]), latency_ms * math.exp(r[hi_i - 1])


@dataclass
class Estimate:
    device: str
    unit: str
    unit_kind: str
    precision: str  # the precision the unit computes in
    threads: int | None
    latency_ms: float
    compute_ms: float
    memory_ms: float
    overhead_ms: float
    bound: str  # compute | memory | mixed
    expected_error_pct: float | None  # leave-one-out median error of the fit for this unit kind; None = unknown
    calibrated: bool
    notes: list[str] = field(default_factory=list)
    per_kernel: list[dict[str, Any]] = field(default_factory=list)
    interval_ms: list[float] | None = None  # empirical 80% interval [low, high]; None = too few residuals
    interval_basis: str = ""  # which leave-one-out residuals the interval comes from
    generation: str = ""  # runtime generation the CPU efficiencies were taken for
    fitted_on: list[str] = field(default_factory=list)  # calibration points of this unit kind's fit

    @property
    def label(self) -> str:
        where = f"{self.device} ({self.unit}, {self.precision})"
        if self.interval_ms:
            lo, hi = self.interval_ms
            return f"80% interval {lo:.3g}-{hi:.3g} ms, estimate for {where} ({self.interval_basis}); not a measurement"
        err = f"±{self.expected_error_pct:.0f}%" if self.expected_error_pct is not None else "unknown"
        return f"estimate for {where}, expected error {err}, no interval (too few calibration points); not a measurement"

    def to_dict(self, per_kernel: bool = True) -> dict[str, Any]:
        d = asdict(self)
        d["label"] = self.label
        d["fps"] = 1000.0 / self.latency_ms if self.latency_ms > 0 else None
        d["upper_ms"] = self.interval_ms[1] if self.interval_ms else None
        if not per_kernel:
            d.pop("per_kernel")
        return d


class NoEstimate(Exception):
    """The device model cannot estimate this case (unpublished figures, unsupported precision, `host`)."""


def estimate(profile: Profile, device: Any, unit: str | None = None, threads: int | None = None,
             params: dict[str, float] | None = None, calib: dict | None = None,
             generation: str | None = None) -> Estimate:
    """Estimate latency of `profile` on `device` (a DeviceConfig-like mapping). Raises NoEstimate with the reason.
    `generation` (tflite-2019 | xnnpack | onnxruntime) defaults to what the device's runtime uses today."""
    dev = device
    unit = unit or dev.get("estimate_unit")
    name = dev.get("display_name") or dev.get("name")
    if not unit:
        raise NoEstimate(f"{name}: no device model (latency is measured by the benchmark stage)")
    units = dev.get("compute_units") or {}
    if unit not in units:
        hint = (" (NNAPI, the GPU delegate, Core ML are delegates, not units: name the unit the delegate runs on, "
                f"e.g. {(dev.get('accelerator') or {}).get('unit') or 'npu'})"
                if unit in ("nnapi", "gpu_delegate", "coreml", "coreml_ane", "tensorrt", "edgetpu_delegate") else "")
        raise NoEstimate(f"{name}: {unit!r} is not a compute unit of this device (units: {', '.join(units) or 'none'})"
                         f"{hint}")
    u = units[unit]
    kind = u.get("kind")
    prec, why = unit_precision(u, profile.precision)
    if prec is None:
        raise NoEstimate(f"{name}, {unit} ({kind}): {why}")
    notes = [why] if why else []
    peak_g = figure_value(u["peak_gops"].get(prec))
    bw_g = figure_value(dev.get("memory_bandwidth_gbps"))
    if peak_g is None and bw_g is None:
        raise NoEstimate(f"{name} {unit}: neither the {prec} peak nor the memory bandwidth is published")
    if threads is None:
        threads = int(dev.get("threads") or 1) if kind == "cpu" else None
    cores = int(u.get("cores") or 1)
    if generation is None:
        generation = RUNTIME_GENERATION.get(dev.get("runtime"), "xnnpack")
    if generation not in GENERATIONS:
        raise NoEstimate(f"runtime generation {generation!r} unknown (known: {', '.join(GENERATIONS)})")
    p, info = params_for(kind, calib) if params is None else (params, {"calibrated": True})
    if peak_g is not None and kind == "cpu" and threads:
        t = min(threads, cores)
        # sub-linear scaling: a serial fraction s of each kernel does not parallelise (Amdahl)
        peak_g *= (t / (1 + p.get("thread_s", 0.0) * (t - 1))) / cores
    if peak_g is None:
        notes.append(f"{prec} peak unpublished: estimated from memory traffic only (fitted)")
    if bw_g is None:
        notes.append("memory bandwidth unpublished: estimated from compute only (fitted)")
    if params is None and not info.get("calibrated"):
        notes.append(info["note"])
    if params is None and kind == "npu" and peak_g is not None:
        # the calibration NPUs (Hexagon) have no published peak, so only their memory term was fitted; the compute
        # term here uses efficiencies borrowed from the Edge TPU fit (fit.py): honest answer is "error unknown"
        info = {**info, "calibrated": False, "expected_error_pct": None, "log_residuals": []}
        notes.append("NPU compute efficiency borrowed from the Edge TPU fit (the calibration NPUs' peaks are "
                     "unpublished): error unknown")
    prof = profile if profile.precision == prec or prec not in ("fp32", "fp16", "int8") else profile.with_precision(prec)
    eff = p.get(f"e_{prec}", p["e_fp32"])
    if prec == "int8" and kind == "cpu":
        ratio = (figure_value(u["peak_gops"].get("int8")) or 0) / (figure_value(u["peak_gops"].get("fp32")) or 1e-9)
        eff = p.get("e_int8_dot" if ratio >= 3 else "e_int8_nodot", p.get("e_int8", eff))
    if kind == "cpu" and generation != "tflite-2019" and prec in ("fp32", "int8"):
        eff *= p.get(f"g_{prec}_{generation}", 1.0)
    per, tc_sum, tm_sum = [], 0.0, 0.0
    n_k = 0
    f_dw = p.get("f_dw", 1.0)
    for k in kernels(prof.layers):
        if k.activation_bytes == 0 and k.macs == 0 and k.weight_bytes == 0:
            continue
        n_k += 1
        if k.klass == "memory" or peak_g is None:
            tc = 0.0 if peak_g is None else k.elements / (peak_g * 1e9 * eff)
        else:
            f = (p.get("f_dw3", f_dw) if k.dw_kernel <= 3 else p.get("f_dw5", f_dw)) if k.klass == "depthwise" else 1.0
            tc = 2 * k.macs / (peak_g * 1e9 * eff * f)
        tm = 0.0 if bw_g is None else (k.weight_bytes + k.activation_bytes) / (bw_g * 1e9 * p["e_mem"])
        t = max(tc, tm) + p["overhead_us"] * 1e-6
        tc_sum += tc
        tm_sum += tm
        per.append({"kernel": k.name, "ops": k.op_types, "class": k.klass, "macs": k.macs,
                    "bytes": k.weight_bytes + k.activation_bytes, "compute_ms": tc * 1e3, "memory_ms": tm * 1e3,
                    "latency_ms": t * 1e3, "bound": "compute" if tc >= tm else "memory"})
    total = sum(r["latency_ms"] for r in per)
    overhead = n_k * p["overhead_us"] * 1e-3
    nc = sum(1 for r in per if r["bound"] == "compute")
    bound = "compute" if nc > 0.7 * len(per) else "memory" if nc < 0.3 * len(per) else "mixed"
    res, basis = info.get("log_residuals") or [], ""
    if len(res) >= 9:
        basis = f"empirical, leave-one-out residuals of {len(res)} {kind} points"
    elif info.get("calibrated") and len(info.get("pooled_log_residuals") or []) >= 9:
        res = info["pooled_log_residuals"]
        basis = f"empirical, leave-one-out residuals of {len(res)} points of all unit kinds ({kind} has too few)"
    else:
        res = []
    iv = interval(total, res) if res else None
    return Estimate(device=name, unit=unit, unit_kind=kind, precision=prec, threads=threads, latency_ms=total,
                    compute_ms=tc_sum * 1e3, memory_ms=tm_sum * 1e3, overhead_ms=overhead, bound=bound,
                    expected_error_pct=info.get("expected_error_pct"), calibrated=bool(info.get("calibrated")),
                    notes=notes, per_kernel=per, interval_ms=list(iv) if iv else None, interval_basis=basis,
                    generation=generation if kind == "cpu" else "", fitted_on=list(info.get("fitted_on") or []))
