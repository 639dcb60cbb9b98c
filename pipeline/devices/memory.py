"""Peak inference memory: estimated from the weight and activation bytes of a profile, fitted on the corpus' measured
peak memory, with an interval from held-out residuals. Imports no ML framework at module level.

Qualcomm AI Hub reports each profile job's peak memory during inference as a range (min-max MB); the model takes the
top of the range (what a RAM budget must hold):

    peak_mb = c[kind, runtime] + beta * weight_MB + gamma * largest_activation_MB      (all >= 0)

fitted by least squares on log(1 + MB). AI Hub's figures swing widely between devices for one network (MobileNetV2
float on the NPU: 1 MB on the Snapdragon X Elite CRD, 51 MB on the Galaxy S24), and the model has no device term, so
its intervals are wide: they are what the held-out devices and networks show (leave-device-out, leave-model-out,
leave-runtime-out, as for latency).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from statistics import median
from typing import Any

from pipeline.devices.features import PRECISION_BYTES, compute_precision


@dataclass(frozen=True)
class MemSample:
    kind: str
    runtime: str
    device: str
    family: str
    weight_mb: float
    activation_mb: float
    peak_mb: float


def profile_mb(profile, precision: str) -> tuple[float, float]:
    """(weight MB, largest single-layer activation MB: input + output) of a profile at a compute precision."""
    wb, ab = PRECISION_BYTES[precision]
    w = sum(l.params for l in profile.layers) * wb / 1e6
    act = max((l.input_bytes / _bytes(l) + l.output_bytes / _bytes(l) for l in profile.layers), default=0) * ab / 1e6
    return w, act


def _bytes(layer) -> int:
    return PRECISION_BYTES.get(layer.precision, (4, 4))[1]


@lru_cache(maxsize=None)
def _mb(network: str, resolution: int, precision: str) -> tuple[float, float]:
    from pipeline.devices import networks

    return profile_mb(networks.profile(network, resolution), precision)


def corpus_samples() -> list[MemSample]:
    from pipeline.devices import corpus

    out = []
    for r in corpus.load():
        if r.mem_max_mb is None:
            continue
        w, a = _mb(r.network, r.resolution, compute_precision(r.unit, r.precision))
        fam = "mobilenet_v1" if r.network.startswith("mobilenet_v1") else r.network
        out.append(MemSample(r.unit, r.runtime, r.device, fam, w, a, r.mem_max_mb))
    return out


def fit(samples: list[MemSample]) -> dict[str, Any]:
    import numpy as np
    from scipy.optimize import least_squares

    rts = sorted({s.runtime for s in samples})
    ri = np.array([rts.index(s.runtime) for s in samples])
    W, A = np.array([s.weight_mb for s in samples]), np.array([s.activation_mb for s in samples])
    y = np.log1p([s.peak_mb for s in samples])

    def f(v):
        return np.log1p(np.exp(v[ri]) + np.exp(v[-2]) * W + np.exp(v[-1]) * A) - y

    sol = least_squares(f, np.zeros(len(rts) + 2), loss="soft_l1", f_scale=0.5)
    v = sol.x
    return {"runtimes": {r: float(math.exp(v[i])) for i, r in enumerate(rts)}, "beta": float(math.exp(v[-2])),
            "gamma": float(math.exp(v[-1])), "rows": len(samples),
            "runtime_rows": {r: sum(1 for s in samples if s.runtime == r) for r in rts}}


def predict(mf: dict, runtime: str, weight_mb: float, activation_mb: float) -> tuple[float, bool]:
    """(peak MB, runtime seen): a runtime measured fewer than MIN_RUNTIME_ROWS times takes the mean constant of the
    kind's well-measured runtimes (as for latency)."""
    from pipeline.devices.model import MIN_RUNTIME_ROWS

    rows = mf.get("runtime_rows", {})
    known = {r: c for r, c in mf["runtimes"].items() if rows.get(r, 0) >= MIN_RUNTIME_ROWS} or mf["runtimes"]
    seen = runtime in known
    c = known[runtime] if seen else sum(known.values()) / len(known)
    return c + mf["beta"] * weight_mb + mf["gamma"] * activation_mb, seen


def _held_out(samples: list[MemSample], key, mode: str) -> list[dict]:
    out = []
    for g in sorted({key(s) for s in samples}):
        train = [s for s in samples if key(s) != g]
        if not train:
            continue
        mf = fit(train)
        for s in samples:
            if key(s) == g:
                p, seen = predict(mf, s.runtime, s.weight_mb, s.activation_mb)
                if seen or mode == "lro":
                    out.append({"mode": mode, "fold": g, "runtime": s.runtime, "measured": s.peak_mb,
                                "predicted": p, "log_residual": math.log1p(s.peak_mb) - math.log1p(p)})
    return out


def validate(samples: list[MemSample]) -> list[dict]:
    """Held-out residuals of log(1 + MB): devices, architectures and (if several) runtimes held out."""
    res = _held_out(samples, lambda s: s.device, "ldo") + _held_out(samples, lambda s: s.family, "lmo")
    if len({s.runtime for s in samples}) > 1:
        res += _held_out(samples, lambda s: s.runtime, "lro")
    return res


def interval(peak_mb: float, residuals: list[float], level: float = 0.8) -> tuple[float, float] | None:
    from pipeline.devices.validation import interval as conformal

    iv = conformal(1.0 + peak_mb, residuals, level)
    return None if iv is None else (max(0.0, iv[0] - 1.0), iv[1] - 1.0)


def summary(res: list[dict]) -> dict[str, Any]:
    """Per mode and runtime: median |error| in MB (relative errors mean little near 0 MB) and how often the measured
    peak falls in the interval built from the other folds' residuals (pooled over runtimes when the group is small
    or one fold)."""
    from pipeline.devices.validation import MIN_RESIDUALS

    groups: dict[str, list[dict]] = {}
    for r in res:
        groups.setdefault(f"{r['mode']}:{r['runtime']}", []).append(r)
    out = {}
    for key, rs in groups.items():
        pool = rs if len(rs) >= MIN_RESIDUALS and len({r["fold"] for r in rs}) > 1 else \
            [q for q in res if q["mode"] == rs[0]["mode"]]
        hits = checked = 0
        for r in rs:
            iv = interval(r["predicted"], [q["log_residual"] for q in pool if q["fold"] != r["fold"]])
            if iv is not None:
                checked += 1
                hits += iv[0] <= r["measured"] <= iv[1]
        out[key] = {"cases": len(rs), "median_abs_error_mb": median(abs(r["measured"] - r["predicted"]) for r in rs),
                    "covered": hits, "checked": checked}
    return out
