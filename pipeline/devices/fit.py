"""Fit the estimator's parameters to the published calibration figures (pipeline/devices/SOURCES.md) plus the
measurements in the store (pipeline/devices/store.py), and rewrite calibration.json:

    python -m pipeline.devices.fit [--store outputs/measurements.db] [--dry-run]

Parameters are fitted per compute-unit kind in log space (least squares on log(estimate / published)), weakly pulled
towards the priors in estimator.PRIOR so that a parameter few points inform stays well-posed. Each point is predicted
by a fit that did not see it (leave-one-out): the median of those errors is a kind's expected error, and their log
residuals give the empirical 80% interval every estimate carries (estimator.interval).
"""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass
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
    network: str = "mobilenet_v2_1.0"  # pipeline.devices.networks name
    resolution: int = 224
    generation: str = "tflite-2019"  # runtime generation the figure was measured with
    fingerprint: str = ""  # store points: the model file's fingerprint (its profile is in the store)

    @property
    def label(self) -> str:
        t = f", {self.threads} thr" if self.threads else ""
        return f"{self.device} {self.unit}{t}: {self.network}@{self.resolution} {self.precision} " \
               f"{self.published_ms:g} ms ({'measured' if self.fingerprint else 'published'})"


HOSTED = "[P] TensorFlow Lite hosted models table (Pixel 3, Android 10, CPU 4 threads)"
HOSTED_GPU = "[P] TensorFlow Lite hosted models table (Pixel 3, Android 10, GPU delegate)"
EFFLITE = "[P] EfficientNet-Lite README, tensorflow/tpu (Pixel 4, 4 CPU threads / GPU)"
# Published figures (sources and retrieval notes: SOURCES.md). MobileNetV1 at width w and resolution r is
# "Mobilenet_V1_w_r" of the hosted-models table; its int8 column is the `_quant` model.
_V1 = [(1.0, 224, 24.0, 13.0, 6.5), (1.0, 192, 18.1, 9.9, 6.3), (1.0, 160, 13.4, 7.3, 5.0), (1.0, 128, 9.0, 4.8, 4.4),
       (0.75, 224, 14.6, 8.5, 4.9), (0.5, 224, 7.9, 4.7, 2.8), (0.25, 224, 3.3, 2.3, 1.8)]
POINTS = [
    *(Point("pixel3", "cpu", 4, "fp32", f, HOSTED, f"mobilenet_v1_{w}", r) for w, r, f, _, _ in _V1),
    *(Point("pixel3", "cpu", 4, "int8", q, HOSTED, f"mobilenet_v1_{w}", r) for w, r, _, q, _ in _V1),
    *(Point("pixel3", "gpu", None, "fp32", g, HOSTED_GPU, f"mobilenet_v1_{w}", r) for w, r, _, _, g in _V1),
    Point("pixel3", "cpu", 4, "fp32", 17.5, HOSTED),
    Point("pixel3", "cpu", 4, "int8", 12.0, HOSTED),
    Point("pixel3", "gpu", None, "fp32", 6.2, HOSTED_GPU),
    Point("pixel2", "cpu", 1, "fp32", 89.0, "[P] TensorFlow model optimization guide (Pixel 2, 1 big core)"),
    Point("pixel2", "cpu", 1, "int8", 54.0, "[P] TensorFlow model optimization guide (Pixel 2, 1 big core, QAT int8)"),
    Point("pixel4", "cpu", 4, "fp32", 12.0, EFFLITE, "efficientnet_lite0"),
    Point("pixel4", "cpu", 4, "int8", 6.5, EFFLITE, "efficientnet_lite0"),
    Point("pixel4", "gpu", None, "fp32", 9.0, EFFLITE, "efficientnet_lite0"),
    Point("pixel4", "gpu", None, "fp16", 6.0, EFFLITE, "efficientnet_lite0"),
    Point("galaxy_s23", "npu", None, "fp16", 0.863, "[P] Qualcomm AI Hub model card, mobilenet_v2"),
    Point("galaxy_s23", "npu", None, "int8", 0.446, "[P] Qualcomm AI Hub model card, mobilenet_v2"),
    Point("coral_edgetpu", "edgetpu", None, "int8", 2.6, "[P] coral.ai Edge TPU benchmarks"),
]
# Free parameters per kind: only those the kind's points can inform (an NPU or GPU without a published peak has no
# compute term; the Edge TPU has no published bandwidth, so no memory term). The generation factors are freed only
# when a point of that generation is in the set (else they stay at their published priors).
FREE = {"cpu": ["e_fp32", "e_int8_dot", "e_int8_nodot", "f_dw3", "f_dw5", "e_mem", "overhead_us", "thread_s",
                "g_fp32_xnnpack", "g_int8_xnnpack", "g_fp32_onnxruntime", "g_int8_onnxruntime"],
        "gpu": ["e_mem", "overhead_us"],
        "npu": ["e_mem", "overhead_us"],
        "edgetpu": ["e_int8", "overhead_us"]}
PRIOR_SIGMA = {"g_fp32_xnnpack": math.log(1.5), "g_int8_xnnpack": math.log(1.5), "g_fp32_onnxruntime": math.log(2),
               "g_int8_onnxruntime": math.log(2), "thread_s": math.log(3)}
DEFAULT_SIGMA = math.log(4.0)  # a prior is worth one point missing by 4x
CAPPED = ("e_fp32", "e_fp16", "e_int8", "e_int8_dot", "e_int8_nodot", "f_dw3", "f_dw5", "e_mem", "thread_s")

_DEVICES: dict[str, Any] = {}
_PROFILES: dict[tuple, Profile] = {}
STORE_PROFILES: dict[str, Profile] = {}  # fingerprint -> profile, filled from the store


def device(name: str) -> dict:
    from omegaconf import OmegaConf

    if name not in _DEVICES:  # plain dicts: the fit calls this thousands of times
        _DEVICES[name] = OmegaConf.to_container(catalog.load(name), resolve=True)
    return _DEVICES[name]


def point_profile(point: Point) -> Profile:
    key = (point.fingerprint or point.network, point.resolution, point.precision)
    if key not in _PROFILES:
        if point.fingerprint:
            base = STORE_PROFILES[point.fingerprint]
        else:
            from pipeline.devices import networks

            base = networks.profile(point.network, point.resolution)
        _PROFILES[key] = base if base.precision == point.precision else base.with_precision(point.precision)
    return _PROFILES[key]


def kind_of(point: Point) -> str:
    return device(point.device)["compute_units"][point.unit]["kind"]


def predict(point: Point, params: dict[str, float]) -> float:
    return estimate(point_profile(point), device(point.device), unit=point.unit, threads=point.threads,
                    params=params, generation=point.generation).latency_ms


def free_params(kind: str, points: list[Point]) -> list[str]:
    gens = {p.generation for p in points}
    names = [n for n in FREE[kind] if not n.startswith("g_") or n.rsplit("_", 1)[1] in gens]
    if kind == "cpu":
        if not any(p.threads and p.threads > 1 for p in points):
            names.remove("thread_s")
        if not any(p.network == "efficientnet_lite0" or p.fingerprint for p in points):
            names.remove("f_dw5")  # only EfficientNet-Lite (and measured models) have 5x5 depthwise kernels
    return names


def fit_kind(kind: str, points: list[Point]) -> dict[str, float]:
    import numpy as np
    from scipy.optimize import least_squares

    names = free_params(kind, points)
    x0 = np.array([math.log(PRIOR[n]) for n in names])
    sig = np.array([PRIOR_SIGMA.get(n, DEFAULT_SIGMA) for n in names])

    def resid(x):
        p = {**PRIOR, **{n: math.exp(v) for n, v in zip(names, x)}}
        r = [math.log(predict(pt, p) / pt.published_ms) for pt in points]
        return np.concatenate([r, (x - x0) / sig])

    hi = [math.log(1.0) if n in CAPPED else math.log(1e4) for n in names]  # an efficiency above 1: model wrong
    x_start = np.minimum(x0, np.array(hi) - 1e-6)
    sol = least_squares(resid, x_start, bounds=([math.log(1e-4)] * len(names), hi), x_scale=1.0)
    return {n: math.exp(v) for n, v in zip(names, sol.x)}


def fit(points: list[Point] | None = None) -> dict[str, Any]:
    """Fit every kind, compute in-sample and leave-one-out errors; returns calibration.json's content."""
    points = list(POINTS if points is None else points)
    kinds: dict[str, Any] = {}
    rows = []
    for kind in FREE:
        pts = [p for p in points if kind_of(p) == kind]
        if not pts:
            continue
        params = fit_kind(kind, pts)
        full = {**PRIOR, **params}
        loo_errs, loo_res = [], []
        for pt in pts:
            others = [q for q in pts if q != pt]
            loo_p = {**PRIOR, **fit_kind(kind, others)} if others else dict(PRIOR)
            est, loo = predict(pt, full), predict(pt, loo_p)
            err, loo_err = 100 * (est / pt.published_ms - 1), 100 * (loo / pt.published_ms - 1)
            loo_errs.append(abs(loo_err))
            loo_res.append(math.log(pt.published_ms / loo))
            rows.append({**asdict(pt), "kind": kind, "estimate_ms": est, "error_pct": err, "loo_estimate_ms": loo,
                         "loo_error_pct": loo_err, "loo_log_residual": loo_res[-1]})
        kinds[kind] = {"params": params, "points": len(pts), "expected_error_pct": median(loo_errs),
                       "in_sample_error_pct": median(abs(r["error_pct"]) for r in rows if r["kind"] == kind),
                       "loo_log_residuals": loo_res, "fitted_on": [p.label for p in pts]}
    # Kinds without a calibration point borrow, and say so (estimator.params_for adds the note).
    for k in ("cpu", "gpu", "npu", "edgetpu"):
        kinds.setdefault(k, {"borrow": "cpu"})
    # The calibration NPUs' peaks are unpublished, so their fit has no compute efficiency: an NPU with a published
    # peak (Apple Neural Engine) takes the Edge TPU's, the other accelerator fitted.
    if "params" in kinds["npu"] and "params" in kinds["edgetpu"]:
        e = kinds["edgetpu"]["params"]["e_int8"]
        kinds["npu"]["params"].update({"e_fp16": e, "e_int8": e})
    return {"models": sorted({p.network for p in points if not p.fingerprint}) + sorted(
                {p.fingerprint for p in points if p.fingerprint}),
            "kinds": kinds, "points": rows,
            "pooled_log_residuals": [r["loo_log_residual"] for r in rows],
            "median_abs_error_pct": median(abs(r["error_pct"]) for r in rows),
            "median_abs_loo_error_pct": median(abs(r["loo_error_pct"]) for r in rows)}


def coverage(result: dict[str, Any], level: float = 0.8) -> dict[str, dict[str, float]]:
    """Per kind: how often the published value falls in the interval an estimate would print for it, each point's
    interval built from the leave-one-out residuals of the *other* points (so a point never widens its own)."""
    from pipeline.devices.estimator import interval

    out: dict[str, dict[str, float]] = {}
    pooled = result["pooled_log_residuals"]
    by_kind: dict[str, list] = {}
    for i, r in enumerate(result["points"]):
        by_kind.setdefault(r["kind"], []).append((i, r))
    for kind, rs in by_kind.items():
        own = [r["loo_log_residual"] for _, r in rs]
        hits, n, pooled_used = 0, 0, False
        for j, (i, r) in enumerate(rs):
            res = own[:j] + own[j + 1:]
            if len(res) < 9:
                res, pooled_used = pooled[:i] + pooled[i + 1:], True
            iv = interval(r["loo_estimate_ms"], res, level)
            if iv is None:
                continue
            n += 1
            hits += iv[0] <= r["published_ms"] <= iv[1]
        out[kind] = {"points": len(rs), "covered": hits, "checked": n,
                     "coverage_pct": 100 * hits / n if n else float("nan"),
                     "median_loo_error_pct": median(abs(r["loo_error_pct"]) for _, r in rs),
                     "pooled_residuals": pooled_used}
    return out


def store_points(db_path) -> list[Point]:
    """Measurements of the store on catalog devices, as calibration points (their profiles come with them)."""
    from pipeline.devices import store

    pts, names = [], set(catalog.names())
    for m in store.rows(db_path):
        if m["device"] not in names or not m.get("latency_p50_ms"):
            continue  # a device without a catalog profile (or without a p50) cannot inform the fit
        if m["fingerprint"] not in STORE_PROFILES:
            prof = store.profile(db_path, m["fingerprint"])
            if prof is None:
                continue
            STORE_PROFILES[m["fingerprint"]] = prof
        pts.append(Point(m["device"], m.get("unit") or "cpu", m["threads"], m["precision"], m["latency_p50_ms"],
                         f"[M] measured {m['recorded_at']} on {m['device']} via {m['connection'] or 'this host'}, "
                         f"{m['runtime']} {m['runtime_version']}", network=m["model"] or "measured", resolution=0,
                         generation=store.generation(m["runtime"]), fingerprint=m["fingerprint"]))
    return pts


def write(result: dict[str, Any]) -> None:
    CALIBRATION.write_text(json.dumps(result, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.devices.fit", description=__doc__.splitlines()[0])
    ap.add_argument("--store", default="outputs/measurements.db", help="measurement store (SQLite); may not exist")
    ap.add_argument("--dry-run", action="store_true", help="print the fit, do not rewrite calibration.json")
    args = ap.parse_args(argv)
    from pathlib import Path

    extra = store_points(args.store) if Path(args.store).exists() else []
    result = fit(POINTS + extra)
    for kind, c in coverage(result).items():
        print(f"{kind:<8} {c['points']:>3} points  leave-one-out median error {c['median_loo_error_pct']:5.1f}%  "
              f"80% interval coverage {c['covered']}/{c['checked']}")
    print(f"{len(POINTS)} published + {len(extra)} measured point(s) from {args.store}")
    if not args.dry_run:
        write(result)
        print(f"wrote {CALIBRATION}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
