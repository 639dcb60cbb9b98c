"""One way to run a model: `load(artifact, threads)` returns an object with `predict(x) -> logits`.

Evaluation, benchmarking and parity all go through here; no stage re-implements "run an ONNX file".
Each format's module imports its runtime only when loaded.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pipeline.runtimes.host import cpu_model, host_threads

__all__ = ["RUNTIMES", "Model", "cpu_model", "describe", "host_threads", "load", "not_runnable_reason", "predict_all"]

# format -> module implementing `load(path, meta, threads) -> Model`
RUNTIMES = {
    "torch": "pipeline.runtimes.torch_rt",
    "onnx": "pipeline.runtimes.onnx_rt",
    "tflite": "pipeline.runtimes.tflite_rt",
    "keras": "pipeline.runtimes.keras_rt",
    "coreml": "pipeline.runtimes.coreml_rt",
}


class Model(Protocol):
    runtime: str  # e.g. "onnxruntime 1.31.1 CPUExecutionProvider"

    def predict(self, x: np.ndarray) -> np.ndarray:  # float32 NCHW batch -> float32 logits
        ...


def load(fmt: str, path: Path | str, meta: dict[str, Any] | None = None, threads: int = 0) -> Model:
    """Load a model of format `fmt` from `path` with `threads` CPU threads (0 = all host cores)."""
    if fmt not in RUNTIMES:
        raise ValueError(f"no runtime for format {fmt!r} (known: {', '.join(RUNTIMES)})")
    return importlib.import_module(RUNTIMES[fmt]).load(Path(path), meta or {}, host_threads(threads))


def not_runnable_reason(fmt: str) -> str | None:
    """Why models of `fmt` cannot run on this host (Core ML off macOS), or None. Imports no framework."""
    check = getattr(importlib.import_module(RUNTIMES[fmt]), "not_runnable_here", None) if fmt in RUNTIMES else None
    return check() if check else None


def describe(fmt: str, path: Path | str, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """A deployable model's interface for people and registries: input/output names, shapes and dtypes, quantization
    parameters (scale, zero point) and how the weights are stored; read from the file itself."""
    meta = meta or {}
    out: dict[str, Any] = {"format": fmt, "file": Path(path).name, "input_layout": meta.get("input_layout", "NCHW"),
                           "classes": meta.get("classes"), "quantization": meta.get("quantization")}
    if fmt == "tflite":
        from pipeline.runtimes import tflite_rt

        info = tflite_rt.inspect(path)
        out.update({k: info[k] for k in ("inputs", "outputs", "operators", "float_operators", "integer_only")})
    elif fmt == "coreml":
        from pipeline.runtimes import coreml_rt

        info = coreml_rt.inspect(path)
        out.update({k: info.get(k) for k in ("inputs", "outputs", "model_type", "opset", "operators",
                                             "weight_elements_by_dtype")})
        out["deployment_target"] = meta.get("coreml", {}).get("deployment_target")
    elif fmt == "onnx":
        import onnx

        g = onnx.load(str(path), load_external_data=False).graph
        vi = lambda v: {"name": v.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name,
                        "shape": [d.dim_value if d.HasField("dim_value") else (d.dim_param or -1)
                                  for d in v.type.tensor_type.shape.dim]}
        out.update(inputs=[vi(v) for v in g.input], outputs=[vi(v) for v in g.output])
    return out


def predict_all(model: Model, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    return np.concatenate([model.predict(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
