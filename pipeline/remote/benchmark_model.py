"""An Android phone timed by LiteRT's own `benchmark_model` binary (device.benchmark_model) over adb: one run per
.tflite in a scratch folder under /data/local/tmp, removed afterwards on every path.

benchmark_model prints its timings in microseconds: a `count=N first=.. curr=.. min=.. max=.. avg=.. std=..` line per
phase (warm-up, then the timed runs) and a summary line "Inference timings in us: Init: .., First inference: ..,
Warmup (avg): .., Inference (avg): ..". They are taken as they are: mean, min, max and the standard deviation of the
timed runs, the load (Init) time, peak memory when printed. It prints no p50 or p90 (newer builds print a median in
the count line; it is kept as `median`, not relabelled): p50/p90 stay empty rather than being made up from the mean,
and whatever reads the result (summary, gate, store) says that the figure is a mean. Imports no ML framework.
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

from pipeline.remote.device import _get, scratch, shell_word
from pipeline.remote.transport import RemoteError

RUNTIME = "LiteRT benchmark_model"
_AVG = re.compile(r"Inference \(avg\):\s*([-+\d.eE]+)")
_INIT = re.compile(r"Init:\s*([-+\d.eE]+)")
_COUNT = re.compile(r"count=(\d+)(.*)")
_FIELD = re.compile(r"(\w+)=([-+\d.eE]+)")
_PEAK = re.compile(r"peak memory footprint \(MB\)[^:\n]*:\s*(?:init=[\d.]+\s+overall=)?([\d.]+)", re.I)


def parse(text: str) -> dict:
    """benchmark_model's output -> figures in ms (None where it printed nothing). Raises ValueError when there is no
    timing at all (the binary failed or is something else)."""
    avg = _AVG.search(text)
    counts = [(int(n), dict(_FIELD.findall(rest))) for n, rest in _COUNT.findall(text)]
    if not avg and not counts:
        raise ValueError("benchmark_model printed no timings (no 'Inference (avg)' nor 'count=' line)")
    timed = counts[-1] if counts else (None, {})  # the last phase is the timed runs (the first one is warm-up)
    n, fields = timed
    us = lambda k: float(fields[k]) / 1e3 if k in fields else None
    mean = float(avg.group(1)) / 1e3 if avg else us("avg")
    init, peak = _INIT.search(text), _PEAK.search(text)
    return {"latency_mean_ms": mean, "latency_p50_ms": None, "latency_p90_ms": None,
            "latency_min_ms": us("min"), "latency_max_ms": us("max"), "latency_std_ms": us("std"),
            "latency_median_ms": us("median"), "samples": n,
            "load_ms": float(init.group(1)) / 1e3 if init else None,
            "peak_rss_mb": float(peak.group(1)) if peak else None,
            "statistic": "mean"}


def measure_tflite(device: Any, conn, t, models: list[dict], threads: int, warmup: int, iterations: int,
                   timeout: float) -> dict:
    """Time each .tflite of `models` with device.benchmark_model; the result has pipeline.remote.measure's shape."""
    name = _get(device, "display_name") or _get(device, "name", "device")
    binary = shell_word(str(_get(device, "benchmark_model")))
    bad = [m["name"] for m in models if m["fmt"] != "tflite"]
    if bad:
        raise RemoteError(f"{', '.join(bad)}: benchmark_model on {name} runs .tflite models only")
    threads = int(threads) or 4
    out: dict[str, Any] = {}
    with scratch(t, conn, name) as folder:
        for i, m in enumerate(models):
            remote = f"{folder}/m{i}.tflite"
            local = Path(m["path"])
            t.put([local], folder, f"copying {m['name']} to {name}", timeout)
            t.run(f"mv {shlex.quote(folder + '/' + local.name)} {shlex.quote(remote)}", "renaming", 60)
            r = t.run(f"{binary} --graph={shlex.quote(remote)} --num_threads={threads} --warmup_runs={int(warmup)} "
                      f"--num_runs={int(iterations)} --report_peak_memory_footprint=true",
                      f"running benchmark_model on {name}", timeout)
            text = r.stdout + r.stderr
            if r.returncode != 0:
                raise RemoteError(f"{name} ({conn}): benchmark_model failed (exit {r.returncode}); check "
                                  f"device.benchmark_model={_get(device, 'benchmark_model')} exists and is executable "
                                  f"(adb shell chmod +x):\n{text.strip()[-1200:]}")
            try:
                figures = parse(text)
            except ValueError as e:
                raise RemoteError(f"{name} ({conn}): {e}; is device.benchmark_model LiteRT's benchmark_model? "
                                  f"Its output ends:\n{text.strip()[-600:]}") from None
            out[m["name"]] = {**figures, "runtime": RUNTIME, "version": "unknown",
                              "measured_on": {"device": name, "connection": str(conn), "runtime": RUNTIME,
                                              "version": "unknown", "threads": threads}}
    peaks = [v["peak_rss_mb"] for v in out.values() if v.get("peak_rss_mb") is not None]
    return {"models": out, "cpu": name, "threads": threads, "peak_rss_mb": max(peaks) if peaks else None,
            "connection": str(conn)}
