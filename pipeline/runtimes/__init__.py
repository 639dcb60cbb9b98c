"""One way to run a model: `load(artifact, threads)` returns an object with `predict(x) -> logits` (the first
output) and, for every runtime that can say, `predict_outputs(x) -> [every output, in the model's order]`.
`predict_all_outputs` batches any of them and gives every output (a runtime without `predict_outputs` has one).

Evaluation, benchmarking and parity all go through here; no stage re-implements "run an ONNX file".
Each format's module imports its runtime only when loaded.

The input is always the pipeline's float32 NCHW batch. A model whose file wants something else (an imported NHWC
ONNX graph, its own normalisation, grayscale) carries its signature in `meta["signature"]` (pipeline.library.signature) and
is wrapped so that every caller, quantizer calibration included (`adapt_input`), feeds it what it wants.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pipeline.core.host import cpu_model, host_threads

__all__ = ["RUNTIMES", "Model", "adapt_input", "cpu_model", "describe", "host_threads", "load", "not_runnable_reason",
           "outputs_of", "predict_all", "predict_all_outputs"]

# format -> module implementing `load(path, meta, threads) -> Model`
RUNTIMES = {
    "torch": "pipeline.runtimes.torch_rt",
    "onnx": "pipeline.runtimes.onnx_rt",
    "tflite": "pipeline.runtimes.tflite_rt",
    "keras": "pipeline.runtimes.keras_rt",
    "coreml": "pipeline.runtimes.coreml_rt",
    "executorch": "pipeline.runtimes.executorch_rt",
    "openvino": "pipeline.runtimes.openvino_rt",
}


class Model(Protocol):
    runtime: str  # e.g. "onnxruntime 1.31.1 CPUExecutionProvider"

    def predict(self, x: np.ndarray) -> np.ndarray:  # float32 NCHW batch -> float32 logits
        ...


# Formats whose runtime module feeds the pipeline's NCHW batch as is: a signature's layout must be applied for them.
# (LiteRT and Keras transpose for NHWC files themselves, from meta["input_layout"].)
_RAW_LAYOUT = ("onnx", "torch", "openvino", "executorch")


def _signature(fmt: str, meta: dict[str, Any]):
    """The signature to adapt inputs to, or None when the runtime takes the pipeline's batch unchanged."""
    d = meta.get("signature")
    if not d:
        return None
    from dataclasses import replace

    from pipeline.library import signature

    sig = signature.Signature.from_dict(d)
    if fmt not in _RAW_LAYOUT:  # the runtime transposes and (de)quantizes itself; keep only normalisation here
        sig = replace(sig, layout="NCHW" if sig.layout else None,
                      inputs=[replace(sig.inputs[0], dtype="float32", quantization=None,
                                      shape=_nchw_shape(sig.inputs[0].shape, sig.layout)), *sig.inputs[1:]])
    needs = (sig.layout == "NHWC" or sig.preprocessing.known or sig.channels == 1
             or (sig.input.dtype == "uint8" and not sig.input.quantization))
    return sig if needs else None


def _nchw_shape(shape, layout):
    s = list(shape)
    return [s[0], s[3], s[1], s[2]] if layout == "NHWC" and len(s) == 4 else s


def adapt_input(fmt: str, meta: dict[str, Any] | None, x: np.ndarray) -> np.ndarray:
    """The pipeline's NCHW batch as the model of (fmt, meta) takes it (calibration images for a quantizer, e.g.)."""
    meta = meta or {}
    sig = _signature(fmt, meta)
    if sig is None:
        return x
    from pipeline.library import signature

    norm = meta.get("data_norm") or {}
    return signature.adapt(x, sig, norm.get("mean", (0.5, 0.5, 0.5)), norm.get("std", (0.5, 0.5, 0.5)))


class Adapted:
    """A loaded model behind its signature's adapter: callers keep handing it the pipeline's NCHW batch."""

    def __init__(self, inner, fmt: str, meta: dict[str, Any]):
        self.inner, self.fmt, self.meta = inner, fmt, meta
        self.runtime = inner.runtime
        self.threads = getattr(inner, "threads", None)
        self.output_names = getattr(inner, "output_names", None)

    def predict_outputs(self, x: np.ndarray) -> list[np.ndarray]:
        return outputs_of(self.inner, adapt_input(self.fmt, self.meta, x))

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.predict_outputs(x)[0]


def load(fmt: str, path: Path | str, meta: dict[str, Any] | None = None, threads: int = 0) -> Model:
    """Load a model of format `fmt` from `path` with `threads` CPU threads (0 = all host cores)."""
    if fmt not in RUNTIMES:
        raise ValueError(f"no runtime for format {fmt!r} (known: {', '.join(RUNTIMES)})")
    meta = meta or {}
    model = importlib.import_module(RUNTIMES[fmt]).load(Path(path), meta, host_threads(threads))
    return Adapted(model, fmt, meta) if _signature(fmt, meta) is not None else model


def not_runnable_reason(fmt: str, meta: dict[str, Any] | None = None) -> str | None:
    """Why models of `fmt` cannot run on this host (Core ML off macOS), or None; with `meta`, also why this model's
    settings cannot (OpenVINO: a precision the CPU plugin lacks), where the runtime module's check takes them.
    Imports no framework."""
    import inspect

    check = getattr(importlib.import_module(RUNTIMES[fmt]), "not_runnable_here", None) if fmt in RUNTIMES else None
    if check is None:
        return None
    return check(meta) if meta is not None and inspect.signature(check).parameters else check()


def describe(fmt: str, path: Path | str, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """A deployable model's interface for people and registries: input/output names, shapes and dtypes, quantization
    parameters (scale, zero point) and how the weights are stored; read from the file itself by the format's runtime
    module (its `describe(path, meta)`)."""
    meta = meta or {}
    out: dict[str, Any] = {"format": fmt, "file": Path(path).name, "input_layout": meta.get("input_layout", "NCHW"),
                           "classes": meta.get("classes"), "quantization": meta.get("quantization")}
    read = getattr(importlib.import_module(RUNTIMES[fmt]), "describe", None) if fmt in RUNTIMES else None
    if read is not None:
        out.update(read(path, meta))
    return out


def outputs_of(model: Model, x: np.ndarray) -> list[np.ndarray]:
    """Every output of one call, in the model's order (a runtime that knows only `predict` has one output)."""
    f = getattr(model, "predict_outputs", None)
    return list(f(x)) if f is not None else [model.predict(x)]


def predict_all_outputs(model: Model, x: np.ndarray, batch_size: int = 64) -> list[np.ndarray]:
    """Every output for the whole of `x`, run `batch_size` images at a time."""
    parts = [outputs_of(model, x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]


def predict_all(model: Model, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """The first output (a classifier's logits) for the whole of `x`."""
    return np.concatenate([model.predict(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
