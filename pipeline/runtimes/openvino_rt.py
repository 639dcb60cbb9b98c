"""OpenVINO Runtime: an IR (`model.xml` + `model.bin`) compiled for a device plugin with its performance hints.

What the artifact's meta says under `openvino` decides how it is compiled:
  device:               CPU (default) | GPU | NPU | AUTO; GPU/NPU only when that plugin finds its hardware here
  performance_mode:     LATENCY (default: one request at a time, what a benchmark of batch 1 measures) | THROUGHPUT
  inference_precision:  null = the plugin's default (on a CPU with AVX-512 BF16 or AMX that is bf16, not fp32) |
                        f32 | bf16 | f16: the precision the plugin computes float layers in
  num_streams:          null = what the hint picks
  static_shape:         true = the input is fixed to one image (`model.reshape` before compiling): the CPU plugin then
                        compiles shape-specialised kernels, measured 1.2x faster at batch 1 on a pruned EfficientNet-Lite0
                        (pipeline/optimize times it beside the dynamic-batch model); batches run image by image
The runtime string names the precision the compiled model actually uses, read back from the plugin.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

DEVICES = ("CPU", "GPU", "NPU", "AUTO")
PRECISIONS = ("f32", "bf16", "f16")
MODES = ("LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT")


def available_devices() -> list[str]:
    """Device plugins that found their hardware on this host (e.g. ['CPU'] or ['CPU', 'GPU.0', 'NPU'])."""
    import openvino as ov

    return list(ov.Core().available_devices)


def compile_config(settings: dict[str, Any], threads: int) -> dict[str, Any]:
    """OpenVINO properties from the artifact's `openvino` settings; unknown values are refused naming the choices."""
    import openvino.properties as props
    import openvino.properties.hint as hints

    mode = str(settings.get("performance_mode") or "LATENCY").upper()
    if mode not in MODES:
        raise ValueError(f"openvino performance_mode must be one of {', '.join(MODES)}, got {mode!r}")
    cfg: dict[str, Any] = {hints.performance_mode: getattr(hints.PerformanceMode, mode)}
    precision = settings.get("inference_precision")
    if precision:
        if precision not in PRECISIONS:
            raise ValueError(f"openvino inference_precision must be one of {', '.join(PRECISIONS)} or null (the "
                             f"plugin's default), got {precision!r}")
        import openvino as ov

        cfg[hints.inference_precision] = {"f32": ov.Type.f32, "bf16": ov.Type.bf16, "f16": ov.Type.f16}[precision]
    device = str(settings.get("device") or "CPU").upper()
    if device.startswith("CPU") and threads > 0:
        cfg[props.inference_num_threads] = threads
    if settings.get("num_streams"):
        cfg[props.num_streams] = int(settings["num_streams"])
    return cfg


class OpenvinoModel:
    def __init__(self, path: Path, meta: dict[str, Any], threads: int):
        import openvino as ov
        import openvino.properties as props
        import openvino.properties.hint as hints

        settings = dict(meta.get("openvino") or {})
        device = str(settings.get("device") or "CPU").upper()
        if device.split(".")[0] not in DEVICES:
            raise ValueError(f"openvino device must be one of {', '.join(DEVICES)}, got {device!r}")
        core = ov.Core()
        here = core.available_devices
        if device != "AUTO" and not any(d == device or d.split(".")[0] == device for d in here):
            raise ValueError(f"OpenVINO has no {device} plugin with hardware on this host (available: "
                             f"{', '.join(here)}); run the model with openvino.device=CPU here, or on a machine "
                             f"with that device")
        try:
            source = str(path)
            if settings.get("static_shape") and meta.get("input_shape"):
                source = core.read_model(str(path))
                source.reshape([1, *list(meta["input_shape"])[1:]])
            self.compiled = core.compile_model(source, device, compile_config(settings, threads))
        except RuntimeError as e:
            raise ValueError(f"OpenVINO cannot load {path}: {str(e).strip().splitlines()[-1]}. The file is corrupt "
                             f"or not an OpenVINO IR (model.xml next to its model.bin); re-create it (re-run with "
                             f"cache.force=[STAGE]) or supply a valid one.") from e
        self.request = self.compiled.create_infer_request()
        self.input_shape = [d.get_length() if d.is_static else -1 for d in self.compiled.input(0).get_partial_shape()]
        self.threads = threads
        facts = {}
        for name, prop in (("precision", hints.inference_precision), ("streams", props.num_streams),
                           ("mode", hints.performance_mode)):
            try:
                facts[name] = self.compiled.get_property(prop)
            except RuntimeError:  # not every plugin reports every property
                pass
        precision = facts.get("precision")
        self.inference_precision = precision.get_type_name() if precision is not None else None
        shown = [f"{self.inference_precision} compute" if self.inference_precision else None,
                 "static shape" if settings.get("static_shape") else None,
                 str(facts["mode"]) if "mode" in facts else None,
                 f"{int(facts['streams'])} stream(s)" if "streams" in facts else None]
        self.runtime = f"OpenVINO {ov.get_version().split('-')[0]} {device} ({', '.join(f for f in shown if f)})"

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        fixed = [(i, d) for i, d in enumerate(self.input_shape) if d > 0 and i > 0]
        if x.ndim != len(self.input_shape) or any(x.shape[i] != d for i, d in fixed):
            want = "x".join(str(d) if d > 0 else "N" for d in self.input_shape)
            raise ValueError(f"the model takes input {want} but the data is {'x'.join(map(str, x.shape))}: set "
                             f"model.input_size to the model's resolution, or export the model for this input size")
        if self.input_shape[0] > 0 and x.shape[0] != self.input_shape[0]:
            return np.concatenate([self.predict(x[i : i + 1]) for i in range(len(x))])
        self.request.infer({0: x})
        return np.array(self.request.get_output_tensor(0).data, dtype=np.float32, copy=True)


def load(path: Path, meta: dict[str, Any], threads: int) -> OpenvinoModel:
    return OpenvinoModel(path, meta, threads)


def inspect(path: Path | str) -> dict[str, Any]:
    """What the IR holds, read with the OpenVINO reader: inputs/outputs, operator counts, how many FakeQuantize
    operators it has (NNCF's int8) and the weight constants' element types."""
    import openvino as ov

    model = ov.Core().read_model(str(path))
    ops = Counter(op.get_type_name() for op in model.get_ordered_ops())
    weights = Counter(str(op.get_output_element_type(0)) for op in model.get_ordered_ops()
                      if op.get_type_name() == "Constant" and int(np.prod(list(op.get_output_shape(0)) or [1])) > 1)
    io = lambda ports: [{"name": p.get_any_name(), "dtype": str(p.get_element_type()),
                         "shape": [d.get_length() if d.is_static else -1 for d in p.get_partial_shape()]} for p in ports]
    return {"inputs": io(model.inputs), "outputs": io(model.outputs),
            "operators": dict(sorted((k, v) for k, v in ops.items() if k not in ("Constant", "Parameter", "Result"))),
            "fake_quantize": ops.get("FakeQuantize", 0), "weight_constants_by_type": dict(weights)}


# OpenVINO's name for each inference precision in the CPU plugin's OPTIMIZATION_CAPABILITIES
CAPABILITY = {"f32": "FP32", "bf16": "BF16", "f16": "FP16"}


def optimization_capabilities(device: str = "CPU") -> list[str]:
    """What the device plugin says it can compute in here (e.g. ['FP32', 'BF16', 'FP16', 'INT8', ...])."""
    import openvino as ov

    return [str(c) for c in ov.Core().get_property(device, "OPTIMIZATION_CAPABILITIES")]


def not_runnable_here(meta: dict[str, Any] | None = None) -> str | None:
    """Why an IR compiled with the settings in meta["openvino"] cannot run on this host, or None: OpenVINO missing,
    no plugin for the device, or an inference precision the plugin's OPTIMIZATION_CAPABILITIES lack. Without
    settings it only looks for the package (imports nothing)."""
    import importlib.util

    if importlib.util.find_spec("openvino") is None:
        return "not runnable on this host (the openvino package is not installed)"
    settings = dict((meta or {}).get("openvino") or {})
    if not settings.get("device") and not settings.get("inference_precision"):
        return None  # the CPU plugin ships with the package: nothing to ask OpenVINO
    device = str(settings.get("device") or "CPU").upper()
    here = available_devices()
    if device != "AUTO" and not any(d == device or d.split(".")[0] == device for d in here):
        return f"not runnable on this host (OpenVINO has no {device} plugin with hardware here: {', '.join(here)})"
    precision = settings.get("inference_precision")
    if precision and device != "AUTO":
        caps = optimization_capabilities(device)
        if CAPABILITY.get(precision) not in caps:
            return (f"not runnable on this host (the OpenVINO {device} plugin cannot compute in {precision}: "
                    f"OPTIMIZATION_CAPABILITIES {', '.join(caps)})")
    return None


def describe(path: Path | str, meta: dict[str, Any]) -> dict[str, Any]:
    """The IR's interface (pipeline.runtimes.describe)."""
    return inspect(path)
