"""Measuring on the device itself: a board over SSH or a phone over adb (`device.connection`).

`measure(device, models, threads, warmup, iterations)` copies the model files and a self-contained runner
(device_runner.py: stdlib + numpy + the device's own runtime) to a fresh scratch folder on the device, runs it there
with `device.remote_python`, reads its JSON back and removes the scratch folder on every path, success or failure.
The result has the shape of pipeline.runtimes.measure.measure plus, per model, `measured_on: {device, connection,
runtime, version, threads}`. Any failure raises RemoteError naming the cause and the fix; a partial result is never
returned. Imports no ML framework.
"""
from __future__ import annotations

import json
import re
import shlex
import tempfile
from pathlib import Path
from typing import Any

from pipeline.remote.connection import Connection, ConnectionError_, parse  # noqa: F401
from pipeline.remote.transport import Adb, RemoteError, Ssh  # noqa: F401

RUNNER = Path(__file__).resolve().parent / "device_runner.py"
RESULT_MARK = "EDGE_PIPELINE_RESULT "
SUFFIX = {"onnx": ".onnx", "tflite": ".tflite", "pte": ".pte"}
DEFAULT_TIMEOUT_S = 600.0


def _get(device: Any, key: str, default=None):
    v = device.get(key, default) if hasattr(device, "get") else getattr(device, key, default)
    return default if v is None else v


def transport_for(device: Any):
    conn = parse(_get(device, "connection"))
    if conn.scheme == "ssh":
        return conn, Ssh(conn, _get(device, "known_hosts"))
    return conn, Adb(conn)


def _parse_result(stdout: str) -> dict | None:
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK):])
    return None


def _runner_failure(conn: Connection, device_name: str, python: str, rc: int, out: str, err: str) -> str:
    res = _parse_result(out) or {}
    tail = err.strip()[-1500:]
    if res.get("error") == "no_runtime" or rc == 3:
        return (f"{device_name} ({conn}): no runtime on the device for this model: {res.get('detail', tail)}. "
                f"Install one there for {python} (pip install ai-edge-litert or tflite-runtime for .tflite; "
                f"onnxruntime or openvino for .onnx; executorch for .pte), or point device.remote_python at an "
                f"interpreter that has it")
    if res.get("error") == "disk_full" or rc == 4 or "No space left on device" in err:
        return (f"{device_name} ({conn}): the device's disk is full ({res.get('detail') or tail[-300:]}). Free space "
                f"in its temporary folder (df -h /tmp on the device) and re-run")
    if rc == 127 or "not found" in err and python in err:
        return (f"{device_name} ({conn}): device.remote_python {python!r} was not found on the device. Install "
                f"Python 3 with numpy there, or set device.remote_python to the interpreter's path "
                f"(e.g. /home/pi/venv/bin/python)")
    if "No module named 'numpy'" in err:
        return (f"{device_name} ({conn}): numpy is not installed for {python} on the device: pip install numpy "
                f"there (or point device.remote_python at a venv that has it)")
    return f"{device_name} ({conn}): the runner failed on the device (exit {rc}):\n{tail}"


def measure(device: Any, models: list[dict], threads: int, warmup: int, iterations: int,
            repeats: int = 3) -> dict:
    """Time `models` ([{name, fmt, path, meta, shape}]) on the device named by device.connection. `threads` is the
    device's own thread count (0 = all its cores). Raises RemoteError with the fix on any failure."""
    name = _get(device, "display_name") or _get(device, "name", "device")
    python = _get(device, "remote_python", "python3")
    timeout = float(_get(device, "remote_timeout_s", DEFAULT_TIMEOUT_S))
    conn, t = transport_for(device)
    for m in models:
        if m["fmt"] not in SUFFIX:
            raise RemoteError(f"{m['name']}: a {m['fmt']} model cannot be timed on {name}; the device runner takes "
                              f"{', '.join(SUFFIX)} (export the model to one of them)")
    if conn.scheme == "adb" and _get(device, "benchmark_model"):
        return _measure_benchmark_model(device, conn, t, models, threads, warmup, iterations, timeout)
    mk = t.run("mktemp -d \"${TMPDIR:-/tmp}/edge-pipeline.XXXXXX\"" if conn.scheme == "ssh"
               else "mktemp -d /data/local/tmp/edge-pipeline.XXXXXX", "creating the scratch folder", 60)
    scratch = mk.stdout.strip().splitlines()[-1] if mk.returncode == 0 and mk.stdout.strip() else ""
    if not scratch.startswith("/"):
        fix = _runner_failure(conn, name, "mktemp", mk.returncode, mk.stdout, mk.stderr)
        raise RemoteError(f"creating the scratch folder on {name} failed: {fix}")
    cleanup_error = None
    try:
        with tempfile.TemporaryDirectory(prefix="edge-remote-") as d:
            spec_models, files = [], [RUNNER]
            for i, m in enumerate(models):
                remote_file = f"{scratch}/m{i}{SUFFIX[m['fmt']]}"
                local = Path(m["path"])
                if local.is_dir():
                    raise RemoteError(f"{m['name']}: {local} is a directory; the device runner takes one model file")
                link = Path(d) / Path(remote_file).name  # copied under a neutral name: file names stay local
                link.symlink_to(local.resolve())
                files.append(link)
                spec_models.append({"name": m["name"], "fmt": m["fmt"], "file": remote_file, "shape": m.get("shape")})
            spec = Path(d) / "spec.json"
            spec.write_text(json.dumps({"models": spec_models, "threads": int(threads), "warmup": int(warmup),
                                        "iterations": int(iterations), "repeats": int(repeats)}))
            files.append(spec)
            t.put(files, scratch, f"copying {len(models)} model(s) to {name}", timeout)
        cmd = (f"cd {shlex.quote(scratch)} && {shlex.quote(python)} device_runner.py spec.json"
               if conn.scheme == "ssh" else
               f"cd {shlex.quote(scratch)} && {python} device_runner.py spec.json")
        r = t.run(cmd, f"running the benchmark on {name}", timeout)
        result = _parse_result(r.stdout)
        if r.returncode != 0 or result is None or "error" in result:
            raise RemoteError(_runner_failure(conn, name, python, r.returncode, r.stdout, r.stderr))
    finally:
        try:
            t.run(f"rm -rf {shlex.quote(scratch)}", "removing the scratch folder", 60)
        except RemoteError as e:
            cleanup_error = e
    if cleanup_error is not None:
        raise RemoteError(f"{cleanup_error}; the scratch folder {scratch} may remain on {name} (remove it by hand). "
                          f"The measurement was not recorded")
    for m in result["models"].values():
        m["measured_on"] = {"device": name, "connection": str(conn), "runtime": m["runtime"],
                            "version": m["version"], "threads": result["threads"], "cpu": result["cpu"]}
    result["connection"] = str(conn)
    return result


_BM_AVG = re.compile(r"Inference \(avg\):\s*([\d.e+]+)")
_BM_INIT = re.compile(r"Init:\s*([\d.e+]+)")
_BM_PEAK = re.compile(r"peak memory footprint \(MB\)[^:]*:\s*([\d.]+)", re.I)
_BM_STATS = re.compile(r"count=(\d+).*?min=([\d.]+).*?max=([\d.]+).*?avg=([\d.e+]+)")


def parse_benchmark_model(text: str) -> dict:
    """LiteRT's benchmark_model output -> load/latency figures. It prints mean, min and max, no percentiles:
    p50/p90 stay None rather than being made up from the mean."""
    avg, init = _BM_AVG.search(text), _BM_INIT.search(text)
    if not avg:
        raise ValueError("benchmark_model printed no 'Inference (avg)' line")
    stats = _BM_STATS.findall(text)
    peak = _BM_PEAK.search(text)
    out = {"latency_mean_ms": float(avg.group(1)) / 1e3, "latency_p50_ms": None, "latency_p90_ms": None,
           "load_ms": float(init.group(1)) / 1e3 if init else None,
           "peak_rss_mb": float(peak.group(1)) if peak else None}
    if stats:
        n, lo, hi, _ = stats[-1]
        out.update(samples=int(n), latency_min_ms=float(lo) / 1e3, latency_max_ms=float(hi) / 1e3)
    return out


def _measure_benchmark_model(device, conn, t, models, threads, warmup, iterations, timeout) -> dict:
    """An Android phone with LiteRT's benchmark_model binary at device.benchmark_model: one run per .tflite."""
    name = _get(device, "display_name") or _get(device, "name", "device")
    binary = _get(device, "benchmark_model")
    bad = [m["name"] for m in models if m["fmt"] != "tflite"]
    if bad:
        raise RemoteError(f"{', '.join(bad)}: benchmark_model on {name} runs .tflite models only")
    mk = t.run("mktemp -d /data/local/tmp/edge-pipeline.XXXXXX", "creating the scratch folder", 60)
    scratch = mk.stdout.strip().splitlines()[-1] if mk.stdout.strip() else ""
    if mk.returncode != 0 or not scratch.startswith("/"):
        raise RemoteError(f"creating the scratch folder on {name} failed: {mk.stderr.strip()[-300:]}")
    out: dict[str, Any] = {}
    try:
        for i, m in enumerate(models):
            remote = f"{scratch}/m{i}.tflite"
            t.put([Path(m["path"])], scratch, f"copying {m['name']} to {name}", timeout)
            t.run(f"mv {scratch}/{Path(m['path']).name} {remote}", "renaming", 60)
            r = t.run(f"{binary} --graph={remote} --num_threads={int(threads) or 4} --warmup_runs={int(warmup)} "
                      f"--num_runs={int(iterations)} --report_peak_memory_footprint=true",
                      f"running benchmark_model on {name}", timeout)
            if r.returncode != 0:
                raise RemoteError(f"{name} ({conn}): benchmark_model failed (exit {r.returncode}); check "
                                  f"device.benchmark_model={binary} exists and is executable (adb shell chmod +x):"
                                  f"\n{(r.stdout + r.stderr).strip()[-1200:]}")
            fig = parse_benchmark_model(r.stdout + r.stderr)
            out[m["name"]] = {**fig, "runtime": "LiteRT benchmark_model", "version": "unknown",
                              "measured_on": {"device": name, "connection": str(conn),
                                              "runtime": "LiteRT benchmark_model", "version": "unknown",
                                              "threads": int(threads) or 4}}
    finally:
        t.run(f"rm -rf {scratch}", "removing the scratch folder", 60)
    peak = max((v.get("peak_rss_mb") or 0 for v in out.values()), default=0)
    return {"models": out, "cpu": name, "threads": int(threads) or 4, "peak_rss_mb": peak,
            "connection": str(conn)}
