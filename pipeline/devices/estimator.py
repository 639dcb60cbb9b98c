"""Latency and peak-memory estimate of a profiled model on a device's compute unit. An estimate, never a measurement.

The latency model (model.py) is fitted on a measured corpus (corpus/: Qualcomm AI Hub's profile jobs on 14 physical
devices plus the published tables of SOURCES.md) and validated by holding out whole devices and whole architectures
(validation.py). Every estimate carries an 80% interval built from the held-out residuals that match how the device is
known (its basis):
- fitted: the device's own measurements are in the fit; a new network on it is a leave-model-out case;
- anchor: the device is known from one measurement of the anchor network per runtime and precision;
- spec: nothing measured on the device; its factor comes from its published peak (CPUs only);
- runtime unseen: the runtime was measured too little on this kind of unit; the leave-runtime-out residuals apply.
A unit kind, precision or device the corpus cannot speak for raises NoEstimate with the reason and what would fix it.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline.devices import features, memory, model, validation
from pipeline.devices.catalog import figure_value
from pipeline.devices.kernels import Kernel, kernels  # noqa: F401 - part of the estimator's API
from pipeline.devices.profiler import Profile
from pipeline.devices.validation import interval  # noqa: F401 - part of the estimator's API

MODE_OF = {"fitted": "lmo", "anchor": "ldo_anchor", "spec": "ldo_spec", "runtime unseen": "lro"}
BASIS_TEXT = {"lmo": "leave-model-out", "ldo_anchor": "leave-device-out with one anchor measurement",
              "ldo_spec": "leave-device-out from the spec sheet", "lro": "leave-runtime-out"}
GROUPS = {"overhead": ("inference", "kernels"), "compute": ("conv_macs", "depthwise_macs", "matmul_macs",
                                                             "elementwise"), "memory": ("weight_bytes",
                                                                                        "activation_bytes")}


class NoEstimate(Exception):
    """The device model cannot estimate this case (no measurement to fit or validate it, unsupported precision...)."""


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


@dataclass
class Estimate:
    device: str
    unit: str
    unit_kind: str
    precision: str  # the precision the unit computes in
    threads: int | None
    runtime: str  # runtime of the latency model (qnn, tflite, onnxruntime, xnnpack ...)
    latency_ms: float
    compute_ms: float  # share of the arithmetic counts (MACs, element-wise work)
    memory_ms: float  # share of the weight and activation bytes
    overhead_ms: float  # share of the per-inference and per-kernel overheads
    bound: str  # compute | memory | overhead: the largest share
    basis: str  # fitted | anchor | spec | runtime unseen
    expected_error_pct: float  # median |error| of the held-out cases the interval comes from
    interval_ms: list[float]  # 80% interval [low, high]
    interval_basis: str  # which held-out residuals, how many
    fitted_on: list[str] = field(default_factory=list)
    fitted_summary: str = ""  # one line: what the fit and this device's factor rest on
    memory: dict[str, Any] | None = None  # peak inference memory estimate with its interval (memory.py)
    no_memory: str = ""  # why there is no peak-memory estimate
    notes: list[str] = field(default_factory=list)
    per_kernel: list[dict[str, Any]] = field(default_factory=list)
    calibrated: bool = True
    log_residuals: list[float] = field(default_factory=list)  # the held-out log(truth / estimate) the interval is from

    @property
    def label(self) -> str:
        lo, hi = self.interval_ms
        return (f"80% interval {lo:.3g}-{hi:.3g} ms, estimate for {self.device} ({self.unit}, {self.precision}, "
                f"{self.runtime}; {self.interval_basis}; {self.fitted_summary}); not a measurement")

    def to_dict(self, per_kernel: bool = True) -> dict[str, Any]:
        d = asdict(self)
        d["label"] = self.label
        d["fps"] = 1000.0 / self.latency_ms if self.latency_ms > 0 else None
        d["upper_ms"] = self.interval_ms[1]
        d.pop("log_residuals")  # the interval states them; a ratio of two estimates (optimize) reads the attribute
        if not per_kernel:
            d.pop("per_kernel")
        return d


def _unit(device: Any, unit: str | None) -> tuple[str, dict]:
    name = device.get("display_name") or device.get("name")
    unit = unit or device.get("estimate_unit")
    if not unit:
        raise NoEstimate(f"{name}: no device model (latency is measured by the benchmark stage)")
    units = device.get("compute_units") or {}
    if unit not in units:
        hint = (" (NNAPI, the GPU delegate, Core ML are delegates, not units: name the unit the delegate runs on, "
                f"e.g. {(device.get('accelerator') or {}).get('unit') or 'npu'})"
                if unit in ("nnapi", "gpu_delegate", "coreml", "coreml_ane", "tensorrt", "edgetpu_delegate") else "")
        raise NoEstimate(f"{name}: {unit!r} is not a compute unit of this device (units: {', '.join(units) or 'none'})"
                         f"{hint}")
    return unit, units[unit]


def _kind_fit(kind: str, cp: str, name: str, unit: str, calib: dict) -> dict:
    kf = (calib.get("kinds") or {}).get(kind)
    if kf is None or "theta" not in kf:
        n = kf["rows"] if kf else 0
        raise NoEstimate(f"{name} {unit}: the corpus holds {n} measurement(s) of a {kind} unit, too few to fit and "
                         f"validate an estimate; measure the model on the device instead (device.connection)")
    if cp not in kf["theta"]:
        raise NoEstimate(f"{name} {unit}: no {kind} in the corpus was measured computing in {cp} "
                         f"(measured: {', '.join(sorted(kf['theta']))})")
    return kf


def _device_factor(kf: dict, device: Any, unit: dict, cp: str, threads: int | None) -> tuple[float, str, float | None]:
    name = device.get("display_name") or device.get("name")
    peak = model.effective_peak(unit, cp, threads)
    a, basis = model.device_factor(kf, device.get("name"), cp, peak)
    if a is None:
        kind = unit.get("kind")
        why = ("its peak is unpublished" if kind in model.SPEC_KINDS else
               f"a {kind}'s speed is taken from measurements only (spec-sheet estimates are validated for CPUs only, "
               f"docs/devices.md)")
        raise NoEstimate(f"{name}: no {kind} measurement of this device in the corpus or the store, and {why}. "
                         f"Measure {validation.ANCHOR} on it once in the deployed runtime and precision, then refit "
                         f"(python -m pipeline.devices.fit): it becomes an anchored device")
    return a, basis, peak


def _kernel_rows(prof: Profile, cp: str, theta: list[float], scale: float) -> list[dict[str, Any]]:
    rows = []
    for k, x in features.per_kernel(prof, cp):
        ms = scale * model.cost(theta, x)
        rows.append({"kernel": k.name, "ops": k.op_types, "class": k.klass, "macs": k.macs,
                     "bytes": k.weight_bytes + k.activation_bytes, "latency_ms": ms})
    return rows


def _shares(theta: list[float], x: list[float], scale: float) -> dict[str, float]:
    idx = {f: i for i, f in enumerate(features.FEATURES)}
    return {g: scale * sum(theta[idx[f]] * x[idx[f]] for f in fs) for g, fs in GROUPS.items()}


def _fitted_on(kf: dict, device: Any, basis: str, cp: str, peak: float | None) -> list[str]:
    f = kf.get("fitted_on", {})
    n_dev = len(f.get("devices", {}))
    out = [f"{kf['kind']} fit: {f.get('measurements', kf['rows'])} measurements of {len(f.get('networks', []))} "
           f"networks on {n_dev} devices ({'; '.join(f.get('sources', []))})"]
    mine = f.get("devices", {}).get(device.get("name"))
    if basis in ("fitted", "anchor") and mine:
        out.append(f"{device.get('name')}: {mine} of them measured on this device")
    if basis == "spec" or (basis == "runtime unseen" and not mine and peak):
        out.append(f"{device.get('name')}: no measurement; its published {cp} peak, {peak:.4g} G ops/s for the "
                   f"threads used")
    out.append("runtimes: " + ", ".join(f.get("runtimes", [])))
    return out


def _fitted_summary(kf: dict, device: Any, basis: str) -> str:
    f = kf.get("fitted_on", {})
    mine = f.get("devices", {}).get(device.get("name"))
    where = (f"{mine} on this device" if basis in ("fitted", "anchor") and mine else
             "none on this device: its spec sheet" if basis in ("spec", "runtime unseen") else "none on this device")
    return f"fitted on {f.get('measurements', kf['rows'])} {kf['kind']} measurements, {where}"


def _memory(profile: Profile, kind: str, cp: str, runtime: str, calib: dict) -> tuple[dict[str, Any] | None, str]:
    """(peak-memory estimate, "") or (None, why not)."""
    mf = (calib.get("memory") or {}).get(kind)
    if mf is None:
        return None, f"no measured peak memory of a {kind} in the corpus"
    w, act = memory.profile_mb(profile, cp)
    peak, seen = memory.predict(mf, runtime, w, act)
    mode = "ldo" if seen else "lro"
    res, group = validation.residuals_for(mf.get("residuals", {}), mode, runtime)
    iv = memory.interval(peak, res) if res else None
    if iv is None:
        return None, (f"{runtime}'s peak memory on a {kind} was measured fewer than {model.MIN_RUNTIME_ROWS} times and "
                      f"the other runtimes cannot validate a transfer to it")
    text = {"ldo": "leave-device-out", "lro": "leave-runtime-out"}[mode]
    return {"peak_mb": peak, "interval_mb": list(iv), "weights_mb": w, "largest_activation_mb": act,
            "basis": f"{text} residuals of {len(res)} measured peaks ({kind}, {group})",
            "label": f"80% interval {iv[0]:.3g}-{iv[1]:.3g} MB peak inference memory, estimate ({text} residuals of "
                     f"{len(res)} {kind} measurements, {group}); not a measurement"}, ""


def estimate(profile: Profile, device: Any, unit: str | None = None, threads: int | None = None,
             runtime: str | None = None, calib: dict | None = None) -> Estimate:
    """Estimate latency (and peak memory) of `profile` on `device` (a DeviceConfig-like mapping) with its 80%
    interval. `runtime` (model.RUNTIMES values) defaults to the device's deployment runtime. Raises NoEstimate."""
    name = device.get("display_name") or device.get("name")
    unit, u = _unit(device, unit)
    kind = u.get("kind")
    prec, why = unit_precision(u, profile.precision)
    if prec is None:
        raise NoEstimate(f"{name}, {unit} ({kind}): {why}")
    cp = features.compute_precision(kind, prec)
    calib = model.calibration() if calib is None else calib
    kf = _kind_fit(kind, cp, name, unit, calib)
    if threads is None and kind == "cpu":
        threads = int(device.get("threads") or 0) or None
    rt = runtime or model.RUNTIMES.get(kind, {}).get(device.get("runtime"))
    if rt is None:
        raise NoEstimate(f"{name} {unit}: the {device.get('runtime')} runtime on a {kind} is not modelled")
    a, basis, peak = _device_factor(kf, device, u, cp, threads)
    b, seen = model.runtime_factor(kf, rt, cp, device.get("name"))
    notes = [why] if why else []
    if not seen:
        basis = "runtime unseen"
        notes.append(f"{rt} was measured fewer than {model.MIN_RUNTIME_ROWS} times on a {kind}: the mean factor of "
                     f"the measured runtimes is used")
    mode = MODE_OF[basis]
    res, group = validation.residuals_for(kf.get("residuals", {}), mode, rt)
    if not res:
        raise NoEstimate(f"{name} {unit}: too few held-out {kind} cases for a {BASIS_TEXT[mode]} estimate (fewer than "
                         f"{validation.MIN_RESIDUALS} from {validation.MIN_FOLDS} devices or architectures) to state "
                         f"an 80% interval; measure the model on the device instead (device.connection)")
    theta, scale = kf["theta"][cp], math.exp(a + b)
    x = features.vector(profile, cp)
    latency = scale * model.cost(theta, x)
    shares = _shares(theta, x, scale)
    lo, hi = validation.interval(latency, res)
    mem, no_mem = _memory(profile, kind, cp, rt, calib)
    return Estimate(
        device=name, unit=unit, unit_kind=kind, precision=cp, threads=threads if kind == "cpu" else None, runtime=rt,
        latency_ms=latency, compute_ms=shares["compute"], memory_ms=shares["memory"],
        overhead_ms=shares["overhead"], bound=max(shares, key=shares.get), basis=basis,
        expected_error_pct=100 * sorted(abs(math.exp(-r) - 1) for r in res)[len(res) // 2],
        interval_ms=[lo, hi], interval_basis=f"{BASIS_TEXT[mode]} residuals of {len(res)} {kind} cases, {group}",
        fitted_on=_fitted_on(kf, device, basis, cp, peak), fitted_summary=_fitted_summary(kf, device, basis),
        memory=mem, no_memory=no_mem,
        notes=notes, per_kernel=_kernel_rows(profile, cp, theta, scale), log_residuals=list(res))
