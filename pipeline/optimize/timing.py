"""Latency for the search, said where it comes from.

Proxies (one per trial, cheap): on a device measured here (`host`), the trial's PyTorch model (batch norms folded) is
timed round-robin with the unmodified model's in this process, and the proxy is the unmodified model's p50 divided by
that speed-up: a ratio measured side by side survives a busy machine, an absolute p50 does not, and no export is
needed (the ONNX exporter takes 5-15 s per model here, longer than a proxy's fine-tune on small inputs). Eager
PyTorch pays more per operator than the deployed runtimes, so the proxy ranks, the finalists' deployed models decide.
On any other device: the estimator's latency of the trial's graph at int8 (pipeline.devices.estimator), an estimate
and labelled so.

The finalists: timed side by side with the peers in one fresh process on this host (pipeline.runtimes.measure), on
the device over its connection when `device.connection` is set (pipeline.remote), or estimated each with its 80%
interval; the ratio of two estimates gets an interval from the estimator's leave-one-out residuals, taking the two
errors as independent (wider than the truth when both models run the same kernels, whose errors move together).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

PROXY_WARMUP, PROXY_ITERATIONS, PROXY_TRIALS = 5, 100, 5
# One thread: eager PyTorch's OpenMP barriers make multi-threaded timings meaningless on a busy machine (a 24 px
# MobileNetV2 measured 6 ms at one thread and 36-190 ms at two, load average 7 on 2 cores).
PROXY_THREADS = 1
PROXY_RESAMPLES = 400


def host_ratio(trial, reference, shape: list[int], threads: int = PROXY_THREADS) -> dict[str, Any]:
    """The trial's speed-up over the unmodified model: both PyTorch modules with their batch norms folded, batch 1,
    timed round-robin in this process (pipeline.runtimes.measure's timing and bootstrap intervals)."""
    import copy

    import torch

    import numpy as np

    from pipeline import models

    from pipeline.library import stats
    from pipeline.runtimes.measure import load_average, time_round_robin

    nets = {}
    for name, m in (("reference", reference), ("trial", trial)):
        m = copy.deepcopy(m).eval()
        models.fold_batchnorm(m)
        nets[name] = m
    x = torch.zeros(1, *list(shape)[1:])
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            for _ in range(PROXY_WARMUP):
                for m in nets.values():
                    m(x)
            times = time_round_robin({n: (lambda m=m: m(x)) for n, m in nets.items()}, PROXY_ITERATIONS, PROXY_TRIALS)
    finally:
        torch.set_num_threads(before)
    # one pair, a few hundred resamples: the proxy ranks trials, its interval is for the table
    ratio, lo, hi = stats.ratio_interval(times["trial"], times["reference"], resamples=PROXY_RESAMPLES)
    p50 = {n: float(np.median(np.concatenate(t))) for n, t in times.items()}
    return {"ratio": ratio, "ratio_ci": [lo, hi], "reference_p50_ms": p50["reference"],
            "p50_ms": p50["trial"], "load_average": load_average(), "threads": threads,
            "how": f"PyTorch {torch.__version__} eager, batch norms folded, {threads} thread(s), round-robin"}


ESTIMATED_AS = {"int8": "int8", "fp16": "fp16", "bf16": "fp16"}  # what the estimator models; anything else as fp32


def estimate(device: dict, fmt: str, path: Path, precision: str | None = "int8") -> dict[str, Any]:
    """The estimator's latency for `device` of the graph at `path` computed in `precision` (a candidate's: bf16 as
    fp16, any precision the estimator does not model as fp32, so that no float model is given int8 speed), with its
    interval and label; {"error": why} when there is no estimate."""
    from pipeline.devices.estimator import NoEstimate
    from pipeline.devices.estimator import estimate as estimate_
    from pipeline.devices.profiler import profile_artifact

    precision = ESTIMATED_AS.get(precision, "fp32")
    prof = profile_artifact(fmt, path)
    if prof.precision != precision:
        prof = prof.with_precision(precision)
    try:
        est = estimate_(prof, device)
    except NoEstimate as e:
        return {"error": str(e)}
    totals = prof.totals()
    return {"latency_ms": est.latency_ms, "interval_ms": est.interval_ms, "label": est.label,
            "unit_kind": est.unit_kind, "ram_estimate_mb": totals["ram_estimate_mb"],
            "log_residuals": est.log_residuals}


def residuals_of(row: dict) -> list[float]:
    """The held-out residuals a row's latency estimate states its interval from ([] when it was measured)."""
    return (row.get("estimate") or {}).get("log_residuals") or []


def ratio_interval(ratio: float, res_peer: list[float], res_model: list[float] | None = None,
                   level: float = 0.8) -> list[float] | None:
    """Interval of truth_peer / truth_model = ratio x exp(r_peer - r_model) for two estimates whose held-out log
    residuals log(truth / estimate) are `res_peer` and `res_model` (None: the same set), drawn independently: wider
    than the truth when the two estimates err alike, as estimates of one device from one fit do."""
    same = res_model is None
    res_model = res_peer if same else res_model
    if len(res_peer) < 3 or len(res_model) < 3:
        return None
    diffs = sorted(a - b for i, a in enumerate(res_peer) for j, b in enumerate(res_model) if not (same and i == j))
    lo = diffs[max(0, math.floor((1 - level) / 2 * len(diffs)))]
    hi = diffs[min(len(diffs) - 1, math.ceil((1 + level) / 2 * len(diffs)) - 1)]
    return [ratio * math.exp(lo), ratio * math.exp(hi)]


def measure_here(models: list[dict], threads: int, warmup: int, iterations: int) -> dict:
    from pipeline.runtimes import isolated

    return isolated.measure(models, threads, warmup, iterations)


def measure_on_device(device: dict, models: list[dict], threads: int, warmup: int, iterations: int) -> dict:
    from pipeline import remote

    return remote.measure(device, models, threads, warmup, iterations)
