"""Confidence intervals for timings and the verdicts drawn from them. numpy only; no ML framework.

Timings come in trials: a benchmark times every model round-robin in several trials (rounds), so samples of one trial
share the machine's load at that moment and samples of two models with the same (trial, index) were taken side by
side. The intervals here come from a hierarchical bootstrap: resample the trials, then the iterations within each
resampled trial. scipy.stats.bootstrap resamples observations independently and has no option for nested samples; with
one trial the method is the ordinary percentile bootstrap and agrees with scipy's (tests/test_stats.py checks it).

A verdict ("faster", "slower") is given only when the interval excludes "no difference"; otherwise
"no measurable difference".
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 2000
FASTER, SLOWER, TIE = "faster", "slower", "no measurable difference"


def _as_trials(samples: Sequence[float] | Sequence[Sequence[float]]) -> list[np.ndarray]:
    """[[trial 1 samples], [trial 2 samples], ...]; a flat list is one trial."""
    if len(samples) == 0:
        raise ValueError("no timing samples: time at least one iteration")
    if np.ndim(samples[0]) == 0:
        return [np.asarray(samples, dtype=float)]
    trials = [np.asarray(t, dtype=float) for t in samples if len(t)]
    if not trials:
        raise ValueError("no timing samples: every trial is empty")
    return trials


def _resample_index(trials: list[np.ndarray], n: int, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """For each of n bootstrap replicates: which trials (with replacement) and which iterations within each."""
    picks = []
    k = len(trials)
    for _ in range(n):
        chosen = rng.integers(0, k, k) if k > 1 else np.zeros(1, dtype=int)
        idx = [rng.integers(0, len(trials[t]), len(trials[t])) for t in chosen]
        picks.append((chosen, idx))
    return picks


def _replicates(groups: list[list[np.ndarray]], stat, n: int, seed: int) -> np.ndarray:
    """Bootstrap replicates of stat(*pooled samples of each group); groups share the resampling (paired)."""
    rng = np.random.default_rng(seed)
    base = groups[0]
    for g in groups[1:]:
        if [len(t) for t in g] != [len(t) for t in base]:
            raise ValueError("paired samples must have the same trials and iterations (time them round-robin)")
    out = np.empty(n)
    for i, (chosen, idx) in enumerate(_resample_index(base, n, rng)):
        pooled = [np.concatenate([g[t][j] for t, j in zip(chosen, idx)]) for g in groups]
        out[i] = stat(*pooled)
    return out


def _percentile_interval(reps: np.ndarray, confidence: float) -> tuple[float, float]:
    a = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(reps, [a, 1.0 - a])
    return float(lo), float(hi)


def p50_interval(samples, confidence: float = CONFIDENCE, resamples: int = RESAMPLES,
                 seed: int = 0) -> tuple[float, float]:
    """Interval of the median of `samples` (flat list, or one list per trial)."""
    trials = _as_trials(samples)
    reps = _replicates([trials], np.median, resamples, seed)
    return _percentile_interval(reps, confidence)


def ratio_interval(a, b, confidence: float = CONFIDENCE, resamples: int = RESAMPLES,
                   seed: int = 0) -> tuple[float, float, float]:
    """median(b) / median(a) with its interval, from paired samples taken side by side (same trials, same order).

    With a = a model and b = its baseline, this is the speed-up of a over b: > 1 means a is faster.
    Returns (ratio, low, high).
    """
    ta, tb = _as_trials(a), _as_trials(b)
    ratio = float(np.median(np.concatenate(tb)) / np.median(np.concatenate(ta)))
    reps = _replicates([ta, tb], lambda x, y: np.median(y) / np.median(x), resamples, seed)
    lo, hi = _percentile_interval(reps, confidence)
    return ratio, lo, hi


def summarize(samples, confidence: float = CONFIDENCE, seed: int = 0) -> dict[str, Any]:
    """p50/p90/mean and the p50 interval of one model's samples, in the units given (ms)."""
    flat = np.concatenate(_as_trials(samples))
    lo, hi = p50_interval(samples, confidence, seed=seed)
    return {"latency_p50_ms": float(np.percentile(flat, 50)), "latency_p90_ms": float(np.percentile(flat, 90)),
            "latency_mean_ms": float(np.mean(flat)), "latency_p50_ci_low_ms": lo, "latency_p50_ci_high_ms": hi,
            "confidence": confidence, "samples": int(flat.size)}


def _interval(x: dict) -> tuple[float, float] | None:
    if x.get("latency_p50_ci_low_ms") is not None and x.get("latency_p50_ci_high_ms") is not None:
        return float(x["latency_p50_ci_low_ms"]), float(x["latency_p50_ci_high_ms"])
    ci = x.get("ci") or x.get("p50_ci")
    if ci:
        return float(ci[0]), float(ci[1])
    return None


def verdict_from_ratio(low: float, high: float) -> str:
    """From the interval of a speed-up (baseline p50 / model p50): faster only if the whole interval is above 1."""
    if low > 1.0:
        return FASTER
    if high < 1.0:
        return SLOWER
    return TIE


def compare(a: dict, b: dict, ratio: tuple[float, float] | None = None) -> str:
    """Is model a faster or slower than model b, or is the difference within the noise?

    a, b: measurement results holding latency_p50_ci_low_ms / latency_p50_ci_high_ms (as `measure` returns them), or
    {"ci": [low, high]}. `ratio` (low, high): the interval of b's p50 / a's p50 when both were timed side by side;
    it is the sharper test and is used when given. Without any interval no verdict is possible: that is also
    "no measurable difference" (one timing each cannot tell noise from a difference).
    """
    if ratio is not None:
        return verdict_from_ratio(*ratio)
    ia, ib = _interval(a), _interval(b)
    if ia is None or ib is None:
        return TIE
    if ia[1] < ib[0]:
        return FASTER
    if ia[0] > ib[1]:
        return SLOWER
    return TIE


def overlaps(a: dict, b: dict) -> bool:
    """True when the p50 intervals of a and b overlap (a tie), or either has none."""
    return compare(a, b) == TIE
