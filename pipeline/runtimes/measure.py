"""Latency measurement in a fresh process: `python -m pipeline.runtimes.measure '<json>'` prints one JSON line.

All models of one benchmark are loaded into the same process and timed round-robin (model A, B, C, A, B, C ...), so
a ratio between them is measured side by side: a noisy neighbour slows them all alike. The iterations are split into
several trials, each starting with a different model, and every p50 and every ratio carries a bootstrap interval over
those trials (pipeline.library.stats): a verdict acts only on a difference larger than its interval. The machine's load
average is recorded before and after, next to the numbers. ONNX Runtime's threads do not spin-wait here, so that no
model's idle threads take the cores of the next one.
"""
from __future__ import annotations

import json
import os
import sys
import time

import numpy as np


def _rss_kb(field: str = "VmRSS:") -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def load_average() -> dict:
    """The 1/5/15-minute load average and the core count: the context a latency on a shared machine needs."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:  # not available on this platform
        return {"cpus": os.cpu_count()}
    return {"1min": round(one, 2), "5min": round(five, 2), "15min": round(fifteen, 2), "cpus": os.cpu_count()}


def time_round_robin(fns: dict, iterations: int, trials: int) -> dict[str, list[list[float]]]:
    """Time every callable of `fns` round-robin; returns {name: [[ms of trial 1], [ms of trial 2], ...]}.

    `iterations` in all, split into `trials` trials (at least one iteration each); trial t starts with the t-th model,
    so no model always runs right after the same neighbour. Samples with the same (trial, index) were taken side by
    side, which pipeline.library.stats uses to pair them.
    """
    names = list(fns)
    trials = max(1, min(trials, iterations))
    per = [iterations // trials + (1 if t < iterations % trials else 0) for t in range(trials)]
    times: dict[str, list[list[float]]] = {n: [] for n in names}
    for t, n_it in enumerate(per):
        order = names[t % len(names):] + names[: t % len(names)]
        for n in names:
            times[n].append([])
        for _ in range(n_it):
            for name in order:
                t0 = time.perf_counter()
                fns[name]()
                times[name][-1].append((time.perf_counter() - t0) * 1e3)
    return times


def intervals(times: dict[str, list[list[float]]], confidence: float | None = None) -> tuple[dict, dict]:
    """Per model: p50/p90/mean with the p50 interval; per pair: the speed-up b_p50 / a_p50 with its interval."""
    from pipeline.library import stats

    conf = confidence or stats.CONFIDENCE
    per = {n: {**stats.summarize(ts, conf), "trials": len(ts)} for n, ts in times.items()}
    ratios: dict[str, dict[str, dict]] = {}
    for a in times:
        for b in times:
            if a != b:
                r, lo, hi = stats.ratio_interval(times[a], times[b], conf)
                ratios.setdefault(a, {})[b] = {"speedup": r, "ci": [lo, hi], "verdict": stats.verdict_from_ratio(lo, hi)}
    return per, ratios


def measure(models: list[dict], threads: int, warmup: int, iterations: int, trials: int = 5) -> dict:
    """models: [{name, fmt, path, meta, shape}]; returns {"models": {name: {latency_p50_ms, latency_p90_ms,
    latency_mean_ms, latency_p50_ci_low_ms, latency_p50_ci_high_ms, confidence, samples, trials, load_ms,
    load_rss_mb, runtime}}, "failed": {name: why it could not be loaded or run}, "speedups": {a: {b: {speedup, ci,
    verdict}}}, "load_average": {before, after}, "cpu", "threads", "peak_rss_mb"}. speedups[a][b] is b's p50 over a's: > 1 when a is faster."""
    from pipeline import runtimes
    from pipeline.runtimes import onnx_rt

    onnx_rt.SPINNING = False  # spinning threads of one model would steal the cores of the next (see onnx_rt)
    before = load_average()
    loaded, out, failed = {}, {}, {}
    for m in models:
        rss0, t0 = _rss_kb(), time.perf_counter()
        try:
            model = runtimes.load(m["fmt"], m["path"], m["meta"], threads)
            x = np.random.default_rng(0).standard_normal(m["shape"]).astype(np.float32)
            model.predict(x)  # the first inference's lazy allocations count as loading
        except Exception as e:  # one model that cannot run here must not cost the others their numbers
            failed[m["name"]] = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:300]}"
            continue
        out[m["name"]] = {"load_ms": (time.perf_counter() - t0) * 1e3, "load_rss_mb": (_rss_kb() - rss0) / 1024,
                          "runtime": model.runtime}
        loaded[m["name"]] = (model, x)
    for _ in range(warmup):
        for model, x in loaded.values():
            model.predict(x)
    fns = {name: (lambda mx=mx: mx[0].predict(mx[1])) for name, mx in loaded.items()}
    times = time_round_robin(fns, iterations, trials)
    after = load_average()
    per, speedups = intervals(times)
    for name in out:
        out[name].update(per[name])
    return {"models": out, "failed": failed, "speedups": speedups, "load_average": {"before": before, "after": after},
            "cpu": runtimes.cpu_model(), "threads": threads, "peak_rss_mb": _rss_kb("VmHWM:") / 1024}


def describe_load(load: dict) -> str:
    """'load average 1.92 (2 cores) before, 2.10 after': for the line saying where a latency was measured."""
    b, a = load.get("before") or {}, load.get("after") or {}
    if "1min" not in b:
        return "load average unknown"
    return f"load average {b['1min']:.2f} before, {a.get('1min', float('nan')):.2f} after ({b.get('cpus')} cores)"


if __name__ == "__main__":
    print(json.dumps(measure(**json.loads(sys.argv[1]))))
