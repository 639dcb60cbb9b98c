"""Grouped validation of the latency model, and the held-out residuals every estimate's interval is built from.

Each residual is log(measured / predicted) of a case the fit did not see, in one of four ways:
- lmo (leave-model-out): every measurement of one architecture held out, the rest fitted; the held-out network is
  predicted on the devices the fit knows (the situation of a user's new network on a measured device);
- ldo_anchor (leave-device-out, one anchor): every measurement of one device held out, the rest fitted; the device's
  factor is then set from ONE measurement of the anchor network (ANCHOR) per precision, and the device's other
  networks are predicted. The anchor network's own rows on that device are never scored;
- ldo_spec (leave-device-out from the spec sheet): as ldo_anchor, but the factor comes from the device's published
  peak alone (spec constants of the remaining devices); used for CPUs only (model.SPEC_KINDS);
- lro (leave-runtime-out): every measurement of one runtime held out; predicted with the mean factor of the other
  runtimes, the device's factor fitted on its other runtimes or else its spec-sheet factor (the situation of a
  runtime measured too little, e.g. XNNPACK on a CPU).
Intervals are split-conformal: the order statistics floor/ceil(0.1 (n + 1)) of a group's residuals, the group being
the unit kind and runtime (pooled over the kind's runtimes when a group has fewer than MIN_RESIDUALS residuals or
comes from fewer than MIN_FOLDS held-out groups).
"""
from __future__ import annotations

import math
from statistics import median
from typing import Any, Callable

from pipeline.devices import model

ANCHOR = "mobilenet_v2"  # the reference network a new device is measured with once (per precision)
MIN_RESIDUALS = 10
MIN_FOLDS = 3  # residuals from one or two held-out devices (or architectures) say nothing about the next one
MODES = ("lmo", "ldo_anchor", "ldo_spec", "lro")


def interval(estimate: float, residuals: list[float], level: float = 0.8) -> tuple[float, float] | None:
    """Split-conformal `level` interval around `estimate` from log residuals log(truth / estimate); None when there
    are too few residuals to reach the level."""
    r = sorted(residuals)
    n = len(r)
    a = (1 - level) / 2
    lo_i, hi_i = math.floor(a * (n + 1)), math.ceil((1 - a) * (n + 1))
    if n < 2 or lo_i < 1 or hi_i > n:
        return None
    return estimate * math.exp(r[lo_i - 1]), estimate * math.exp(r[hi_i - 1])


def _res(s, pred: float, mode: str, fold: str) -> dict[str, Any]:
    return {"kind": s.kind, "mode": mode, "fold": fold, "runtime": s.runtime, "precision": s.precision,
            "device": s.device, "network": s.network, "measured_ms": s.latency_ms, "predicted_ms": pred,
            "log_residual": math.log(s.latency_ms / pred)}


def _predict(kf: dict, s, a: float, own: bool = False) -> float:
    b, _ = model.runtime_factor(kf, s.runtime, s.precision, s.device if own else None)
    return model.predict(kf, list(s.x), s.precision, a, b)


def _held_out(samples: list, group: str, fit: Callable, peaks: dict):
    """(held-out group, the fit on every other group's samples) for each value of the samples' `group` attribute."""
    for held in sorted({getattr(s, group) for s in samples}):
        train = [s for s in samples if getattr(s, group) != held]
        if train:
            yield held, fit(train, peaks)


def lmo(samples: list, fit: Callable, peaks: dict) -> list[dict]:
    out = []
    for fam, kf in _held_out(samples, "family", fit, peaks):
        for s in samples:
            if s.family == fam and s.precision in kf["devices"].get(s.device, {}) \
                    and model.runtime_factor(kf, s.runtime, s.precision, s.device)[1]:
                out.append(_res(s, _predict(kf, s, kf["devices"][s.device][s.precision], own=True), "lmo", fam))
    return out


def ldo_anchor(samples: list, fit: Callable, peaks: dict) -> tuple[list[dict], int]:
    """Residuals, and how many rows were not scored because their device has no anchor measurement in their
    precision and runtime."""
    out, unanchored = [], 0
    for dev, kf in _held_out(samples, "device", fit, peaks):
        for p, rt in sorted({(s.precision, s.runtime) for s in samples if s.device == dev}):
            rows = [s for s in samples if s.device == dev and s.precision == p and s.runtime == rt]
            anchor = next((s for s in rows if s.network == ANCHOR), None)
            scored = [s for s in rows if s.network != ANCHOR]
            if anchor is None or p not in kf["theta"]:
                unanchored += len(scored)
                continue
            # same runtime and precision: the anchor fixes the device's and the runtime's factors together
            scale = anchor.latency_ms / model.cost(kf["theta"][p], list(anchor.x))
            out += [_res(s, scale * model.cost(kf["theta"][p], list(s.x)), "ldo_anchor", dev) for s in scored]
    return out, unanchored


def ldo_spec(samples: list, fit: Callable, peaks: dict) -> list[dict]:
    out = []
    for dev, kf in _held_out(samples, "device", fit, peaks):
        for s in samples:
            c = kf["spec"].get(s.precision)
            if s.device == dev and c is not None and peaks.get((dev, s.precision)) \
                    and model.runtime_factor(kf, s.runtime, s.precision)[1]:
                out.append(_res(s, _predict(kf, s, c - math.log(peaks[(dev, s.precision)])), "ldo_spec", dev))
    return out


def lro(samples: list, fit: Callable, peaks: dict) -> list[dict]:
    """Each runtime held out in turn; a held-out row's device keeps the factor the other runtimes fitted, else takes
    its spec-sheet factor (CPUs), else it is not scored."""
    out = []
    if len({s.runtime for s in samples}) < 2:
        return out
    for rt in sorted({s.runtime for s in samples}):
        kf = fit([s for s in samples if s.runtime != rt], peaks)
        for s in samples:
            if s.runtime != rt or s.precision not in kf["theta"]:
                continue
            a = kf["devices"].get(s.device, {}).get(s.precision)
            c = kf["spec"].get(s.precision)
            if a is None and c is not None and peaks.get((s.device, s.precision)) and s.kind in model.SPEC_KINDS:
                a = c - math.log(peaks[(s.device, s.precision)])
            if a is not None:
                out.append(_res(s, _predict(kf, s, a), "lro", rt))
    return out


def residual_sets(res: list[dict]) -> dict[str, dict[str, dict[str, Any]]]:
    """{mode: {runtime | "*": {"residuals": [log residuals], "folds": {held-out group: cases}}}} as calibration.json
    stores them ("*": all runtimes of the kind)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for r in res:
        for rt in (r["runtime"], "*"):
            g = out.setdefault(r["mode"], {}).setdefault(rt, {"residuals": [], "folds": {}})
            g["residuals"].append(round(r["log_residual"], 5))
            g["folds"][r["fold"]] = g["folds"].get(r["fold"], 0) + 1
    return out


def residuals_for(sets: dict, mode: str, runtime: str) -> tuple[list[float], str]:
    """The residuals an estimate's interval is built from, and which they are: the runtime's own when there are
    MIN_RESIDUALS from MIN_FOLDS held-out groups, else the kind's pooled ones; [] when neither qualifies.
    Leave-runtime-out folds are runtimes: a kind measured with two (the CPU: ONNX Runtime and the 2019 TFLite kernels)
    gives transfers in both directions, pooled, when each holds MIN_RESIDUALS // 2 cases; the interval is then as
    wide as they disagree."""
    by = sets.get(mode, {})
    need, per_fold = (2, MIN_RESIDUALS // 2) if mode == "lro" else (MIN_FOLDS, 1)
    for key, name in ((runtime, runtime), ("*", "all runtimes")):
        g = by.get(key) or {}
        folds = sum(1 for n in (g.get("folds") or {}).values() if n >= per_fold)
        if len(g.get("residuals", [])) >= MIN_RESIDUALS and folds >= need:
            return g["residuals"], name
    return [], ""


def coverage(res: list[dict], level: float = 0.8) -> dict[tuple, dict[str, Any]]:
    """Per (kind, mode, runtime): held-out cases, median |error| and how often the measured value falls in the
    interval the estimate would print, that interval built from the residuals of the OTHER folds only. `errors`
    keeps each case's |error| for pooling."""
    groups: dict[tuple, list[dict]] = {}
    for r in res:
        groups.setdefault((r["kind"], r["mode"], r["runtime"]), []).append(r)
    out = {}
    for key, rs in sorted(groups.items()):
        pooled = [r for r in res if r["kind"] == key[0] and r["mode"] == key[1]]
        # a group that is one fold (leave-runtime-out: the fold is the runtime) is checked against the others
        own = len(rs) >= MIN_RESIDUALS and len({r["fold"] for r in rs}) > 1
        hits = checked = 0
        for r in rs:
            iv = interval(r["predicted_ms"], [q["log_residual"] for q in (rs if own else pooled)
                                              if q["fold"] != r["fold"]], level)
            if iv is None:
                continue
            checked += 1
            hits += iv[0] <= r["measured_ms"] <= iv[1]
        errors = [abs(math.exp(-r["log_residual"]) - 1) for r in rs]
        out[key] = {"cases": len(rs), "median_abs_error_pct": 100 * median(errors), "covered": hits,
                    "checked": checked, "coverage_pct": 100 * hits / checked if checked else None,
                    "folds": len({r["fold"] for r in rs}), "pooled": not own, "errors": errors}
    return out
