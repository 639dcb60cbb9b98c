"""Measuring on the device itself: a board over SSH or a phone over adb (`device.connection`).

`measure(device, models, threads, warmup, iterations)` copies the model files and a self-contained runner
(device_runner.py: stdlib + numpy + the device's own runtime) to a fresh scratch folder on the device, runs it there
with `device.remote_python`, reads its JSON back and removes the scratch folder on every path, success or failure
(when the link is gone and it cannot, the error names the folder and the command that removes it). Formats: .onnx,
.tflite, ExecuTorch .pte and OpenVINO IR, each fed the input its own file declares. A device with LiteRT's
benchmark_model binary (device.benchmark_model: a phone without Python, or a board) is timed by that binary instead
(pipeline.remote.benchmark_model).
The result has the shape of pipeline.runtimes.measure.measure plus, per model, `measured_on: {device, connection,
runtime, version, threads}`. Any failure raises RemoteError naming the cause and the fix; a partial result is never
returned. Imports no ML framework.
"""
from __future__ import annotations

import json
import shlex
import tempfile
from pathlib import Path
from typing import Any

from pipeline.remote.connection import Connection, ConnectionError_, parse  # noqa: F401
from pipeline.remote.device import PLAIN_WORD, _get, scratch, shell_word  # noqa: F401
from pipeline.remote.transport import Adb, RemoteError, Ssh  # noqa: F401

RUNNER = Path(__file__).resolve().parent / "device_runner.py"
RESULT_MARK = "EDGE_PIPELINE_RESULT "
# every format a device deploys, with the suffix its copy gets on the device ("pte": the older name of executorch)
SUFFIX = {"onnx": ".onnx", "tflite": ".tflite", "executorch": ".pte", "pte": ".pte", "openvino": ".xml"}
DEFAULT_TIMEOUT_S = 600.0


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
        if Path(m["path"]).is_dir():
            raise RemoteError(f"{m['name']}: {Path(m['path']).name} is a directory; the device runner takes one model "
                              f"file (an OpenVINO IR: its .xml, the .bin beside it goes along)")
    if _get(device, "benchmark_model"):
        from pipeline.remote.benchmark_model import measure_tflite  # (it imports nothing of this module)

        return measure_tflite(device, conn, t, models, threads, warmup, iterations, timeout)
    with scratch(t, conn, name) as folder, tempfile.TemporaryDirectory(prefix="edge-remote-") as d:
        spec_models, files = [], [RUNNER]
        for i, m in enumerate(models):
            remote_file = f"{folder}/m{i}{SUFFIX[m['fmt']]}"
            for local, as_name in _files_of(m, i):  # copied under neutral names: file names stay local
                link = Path(d) / as_name
                link.symlink_to(local.resolve())
                files.append(link)
            spec_models.append({"name": m["name"], "fmt": m["fmt"], "file": remote_file, "shape": m.get("shape"),
                                "layout": (m.get("meta") or {}).get("input_layout") or "NCHW"})
        spec = Path(d) / "spec.json"
        spec.write_text(json.dumps({"models": spec_models, "threads": int(threads), "warmup": int(warmup),
                                    "iterations": int(iterations), "repeats": int(repeats)}))
        files.append(spec)
        t.put(files, folder, f"copying {len(models)} model(s) to {name}", timeout)
        cmd = f"cd {shlex.quote(folder)} && {shell_word(python)} device_runner.py spec.json"
        r = t.run(cmd, f"running the benchmark on {name}", timeout)
        result = _parse_result(r.stdout)
        if r.returncode != 0 or result is None or "error" in result:
            raise RemoteError(_runner_failure(conn, name, python, r.returncode, r.stdout, r.stderr))
    for m in result["models"].values():
        m["measured_on"] = {"device": name, "connection": str(conn), "runtime": m["runtime"],
                            "version": m["version"], "threads": result["threads"], "cpu": result["cpu"]}
    result["connection"] = str(conn)
    return result


def _files_of(m: dict, i: int) -> list[tuple[Path, str]]:
    """The local files of model spec `m` and the names they get on the device (an OpenVINO IR is its .xml and the
    .bin of its weights, which OpenVINO finds by the same stem)."""
    local = Path(m["path"])
    out = [(local, f"m{i}{SUFFIX[m['fmt']]}")]
    if m["fmt"] == "openvino":
        weights = local.with_suffix(".bin")
        if not weights.is_file():
            raise RemoteError(f"{m['name']}: the OpenVINO IR {local.name} has no {weights.name} beside it")
        out.append((weights, f"m{i}.bin"))
    return out
