"""Latency measurement in a fresh process: `python -m pipeline.runtimes.measure '<json>'` prints one JSON line.

All models of one benchmark are loaded into the same process and timed round-robin (model A, B, C, A, B, C ...), so
a ratio between them is measured side by side: a noisy neighbour slows them all alike. ONNX Runtime's threads do not
spin-wait here, so that no model's idle threads take the cores of the next one.
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np


def _rss_kb(field: str = "VmRSS:") -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def measure(models: list[dict], threads: int, warmup: int, iterations: int) -> dict:
    """models: [{name, fmt, path, meta, shape}]; returns {name: {latency_p50_ms, ...}} plus the host's CPU."""
    from pipeline import runtimes
    from pipeline.runtimes import onnx_rt

    onnx_rt.SPINNING = False  # spinning threads of one model would steal the cores of the next (see onnx_rt)
    loaded, out = {}, {}
    for m in models:
        rss0, t0 = _rss_kb(), time.perf_counter()
        model = runtimes.load(m["fmt"], m["path"], m["meta"], threads)
        x = np.random.default_rng(0).standard_normal(m["shape"]).astype(np.float32)
        model.predict(x)  # the first inference's lazy allocations count as loading
        out[m["name"]] = {"load_ms": (time.perf_counter() - t0) * 1e3, "load_rss_mb": (_rss_kb() - rss0) / 1024,
                          "runtime": model.runtime}
        loaded[m["name"]] = (model, x)
    for _ in range(warmup):
        for model, x in loaded.values():
            model.predict(x)
    times: dict[str, list[float]] = {n: [] for n in loaded}
    for _ in range(iterations):
        for name, (model, x) in loaded.items():
            t = time.perf_counter()
            model.predict(x)
            times[name].append((time.perf_counter() - t) * 1e3)
    for name, ts in times.items():
        out[name].update(latency_p50_ms=float(np.percentile(ts, 50)), latency_p90_ms=float(np.percentile(ts, 90)),
                         latency_mean_ms=float(np.mean(ts)))
    return {"models": out, "cpu": runtimes.cpu_model(), "threads": threads,
            "peak_rss_mb": _rss_kb("VmHWM:") / 1024}


if __name__ == "__main__":
    print(json.dumps(measure(**json.loads(sys.argv[1]))))
