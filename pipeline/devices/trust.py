"""Which store measurements the refit may take: only one made on the device it names, with a runtime the device
deploys and a version that says which kernels ran. Imports no ML framework.

A measurement names its device (the catalog entry the benchmark ran for); the store also keeps what the machine
reported: its CPU name (/proc/cpuinfo's model name, Model or Hardware line) and core count. The device file says what
those must be (`identity`). A row that fails is refused with both sides named and the fix; the refit stops.
"""
from __future__ import annotations

from typing import Any

from pipeline.devices import store

# runtime of a measurement -> artifact format it ran (the device must deploy that format)
FORMAT_OF = {"onnxruntime": "onnx", "xnnpack": "tflite", "tflite-2019": "tflite", "openvino": "openvino"}


def problems(m: dict[str, Any], device: dict[str, Any]) -> list[str]:
    """Why measurement `m` (a store row) cannot be taken as one of `device` (its catalog entry); [] = trusted."""
    name = device["name"]
    where = f"conf/device/{name}.yaml"
    ident = device.get("identity") or {}
    want, cpu = list(ident.get("cpu_model") or []), (m.get("cpu") or "").strip()
    head = f"measurement #{m.get('id', '?')} of {m.get('model') or m.get('fingerprint')} stored as {name!r}"
    out = []
    if not want:
        out.append(f"{head}: {where} names no identity.cpu_model, so nothing says which machine is {name}; add the "
                   f"CPU name its /proc/cpuinfo reports (e.g. identity: {{cpu_model: [\"Cortex-A72\"], cores: 4}})")
    elif not any(w.lower() in cpu.lower() for w in want):
        out.append(f"{head}: measured on CPU {cpu or 'unknown'!r}, but {where} expects one of {want}: it was "
                   f"measured on another machine. Benchmark again with device={name} and the device's own "
                   f"connection (or store it under the device it ran on); fix identity.cpu_model if the device file "
                   f"is wrong")
    cores = ident.get("cores")
    if cores and m.get("cores") is None:
        out.append(f"{head}: no core count recorded (measured before the store kept it); measure it again")
    elif cores and int(m["cores"]) != int(cores):
        out.append(f"{head}: the machine reported {m['cores']} CPU cores, {where} says {cores} (identity.cores): "
                   f"not the same device")
    rt = store.model_runtime(m.get("runtime") or "", m.get("runtime_version"))
    if (m.get("runtime_version") or "unknown") == "unknown":
        out.append(f"{head}: no version of {m.get('runtime') or 'its runtime'} recorded; the refit keeps runtimes and "
                   f"their kernel generations apart by version (e.g. TensorFlow Lite 2019 kernels vs XNNPACK), so "
                   f"measure it again with a runtime that reports its version")
    elif rt is None:
        out.append(f"{head}: runtime {m.get('runtime')!r} version {m.get('runtime_version')!r} does not say which "
                   f"kernels ran (TensorFlow Lite < 2.3: its own kernels, >= 2.3: XNNPACK); record the version")
    elif FORMAT_OF.get(rt) not in (device.get("formats") or []):
        out.append(f"{head}: measured with {m.get('runtime')} ({FORMAT_OF.get(rt)} models), which {where} does not "
                   f"deploy (formats: {', '.join(device.get('formats') or [])})")
    return out
