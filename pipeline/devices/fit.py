"""Fit the estimator's efficiencies to the published calibration points (../shared/reference/devices.md).

Parameters are fitted per compute-unit kind in log space (least squares on log(estimate / published)), weakly pulled
towards the priors in estimator.PRIOR so that a kind with one point stays well-posed. The expected error of a kind is
its leave-one-out error: each point predicted by a fit that did not see it.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from statistics import median
from typing import Any

from pipeline.devices import catalog
from pipeline.devices.estimator import CALIBRATION, PRIOR, estimate
from pipeline.devices.profiler import Profile


@dataclass(frozen=True)
class Point:
    device: str
    unit: str
    threads: int | None
    precision: str
    published_ms: float
    source: str


# MobileNetV2 1.0, 224x224, batch 1 (300.8 M MACs, 3.47 M parameters).
POINTS = [
    Point("pixel3", "cpu", 4, "fp32", 17.5, "[P] TensorFlow Lite hosted models table (Pixel 3, 4 threads)"),
    Point("pixel3", "cpu", 4, "int8", 12.0, "[P] TensorFlow Lite hosted models table (Pixel 3, 4 threads)"),
    Point("pixel2", "cpu", 1, "fp32", 89.0, "[P] TensorFlow model optimization guide (Pixel 2, 1 big core)"),
    Point("pixel2", "cpu", 1, "int8", 54.0, "[P] TensorFlow model optimization guide (Pixel 2, 1 big core, QAT int8)"),
    Point("galaxy_s23", "npu", None, "fp16", 0.863, "[P] Qualcomm AI Hub model card, mobilenet_v2"),
    Point("galaxy_s23", "npu", None, "int8", 0.446, "[P] Qualcomm AI Hub model card, mobilenet_v2"),
    Point("coral_edgetpu", "edgetpu", None, "int8", 2.6, "[P] coral.ai Edge TPU benchmarks"),
]
# Free parameters per kind: only those the kind's points can inform (an NPU without a published peak has no
# compute term; the Edge TPU has no published bandwidth, so no memory term).
FREE = {"cpu": ["e_fp32", "e_int8", "f_dw", "e_mem", "overhead_us"],
        "npu": ["e_mem", "overhead_us"],
        "edgetpu": ["e_int8", "overhead_us"]}
PRIOR_SIGMA = math.log(4.0)  # a prior is worth one point missing by 4x


_DEVICES: dict[str, Any] = {}
_PROFILES: dict[tuple[int, str], Profile] = {}


def _predict(point: Point, profile: Profile, params: dict[str, float]) -> float:
    from omegaconf import OmegaConf

    if point.device not in _DEVICES:  # plain dicts: the fit calls this thousands of times
        _DEVICES[point.device] = OmegaConf.to_container(catalog.load(point.device), resolve=True)
    key = (id(profile), point.precision)
    if key not in _PROFILES:
        _PROFILES[key] = profile.with_precision(point.precision)
    return estimate(_PROFILES[key], _DEVICES[point.device], unit=point.unit, threads=point.threads,
                    params=params).latency_ms


def fit_kind(kind: str, points: list[Point], profile: Profile) -> dict[str, float]:
    import numpy as np
    from scipy.optimize import least_squares

    names = FREE[kind]
    x0 = np.array([math.log(PRIOR[n]) for n in names])

    def resid(x):
        p = {**PRIOR, **{n: math.exp(v) for n, v in zip(names, x)}}
        r = [math.log(_predict(pt, profile, p) / pt.published_ms) for pt in points]
        r += [(v - math.log(PRIOR[n])) / PRIOR_SIGMA for n, v in zip(names, x)]
        return np.array(r)

    sol = least_squares(resid, x0, bounds=([math.log(1e-4)] * len(names), [math.log(1e4)] * len(names)))
    p = {n: math.exp(v) for n, v in zip(names, sol.x)}
    for n in ("e_fp32", "e_fp16", "e_int8", "f_dw", "e_mem"):  # an efficiency above 1 means the model is wrong
        if n in p:
            p[n] = min(p[n], 1.0)
    return p


def fit(profile: Profile) -> dict[str, Any]:
    """Fit every kind, compute in-sample and leave-one-out errors; returns calibration.json's content."""
    kinds: dict[str, Any] = {}
    rows = []
    for kind in FREE:
        pts = [p for p in POINTS if catalog.load(p.device).compute_units[p.unit].kind == kind]
        params = fit_kind(kind, pts, profile)
        full = {**PRIOR, **params}
        loo_errs = []
        for pt in pts:
            others = [q for q in pts if q != pt]
            loo_p = {**PRIOR, **fit_kind(kind, others, profile)} if others else dict(PRIOR)
            est = _predict(pt, profile, full)
            loo = _predict(pt, profile, loo_p)
            err, loo_err = 100 * (est / pt.published_ms - 1), 100 * (loo / pt.published_ms - 1)
            loo_errs.append(abs(loo_err))
            rows.append({"device": pt.device, "unit": pt.unit, "kind": kind, "threads": pt.threads,
                         "precision": pt.precision, "published_ms": pt.published_ms, "estimate_ms": est,
                         "error_pct": err, "loo_estimate_ms": loo, "loo_error_pct": loo_err, "source": pt.source})
        kinds[kind] = {"params": params, "points": len(pts), "expected_error_pct": median(loo_errs),
                       "in_sample_error_pct": median(abs(r["error_pct"]) for r in rows if r["kind"] == kind)}
    # Kinds without a calibration point borrow, and say so (estimator.params_for adds the note).
    kinds["gpu"] = {"borrow": "cpu"}
    # The S23 NPU's peak is unpublished, so its fit has no compute efficiency: an NPU with a published peak (Apple
    # Neural Engine) takes the Edge TPU's, the other accelerator fitted.
    kinds["npu"]["params"].update({"e_fp16": kinds["edgetpu"]["params"]["e_int8"],
                                   "e_int8": kinds["edgetpu"]["params"]["e_int8"]})
    return {"model": "MobileNetV2 1.0 224x224 batch 1", "kinds": kinds, "points": rows,
            "median_abs_error_pct": median(abs(r["error_pct"]) for r in rows),
            "median_abs_loo_error_pct": median(abs(r["loo_error_pct"]) for r in rows)}


def write(result: dict[str, Any]) -> None:
    CALIBRATION.write_text(json.dumps(result, indent=2) + "\n")
