"""ONNX Runtime on the CPU."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

# ONNX Runtime's intra-op threads spin-wait after each run to pick up the next one quickly. Timing several models
# round-robin in one process (pipeline.runtimes.measure) turns that into cores stolen from the next model: measured at
# 224x224 with 2 threads, fp32 MobileNetV2 took 7.5 ms round-robin vs 3.1 ms alone. The measuring process turns it off.
SPINNING = True


class OnnxModel:
    def __init__(self, path: Path, threads: int):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        if not SPINNING:
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for corrupt files
            raise ValueError(f"ONNX Runtime cannot load {path}: {str(e).splitlines()[0]}. The file is corrupt or not "
                             f"an ONNX model; re-create it (re-run with cache.force=[STAGE]) or supply a valid one.") from e
        inp = self.session.get_inputs()[0]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.input_name, self.input_shape = inp.name, inp.shape
        self.fixed_batch = isinstance(inp.shape[0], int)
        self.runtime = f"onnxruntime {ort.__version__} CPUExecutionProvider" + (
            "" if SPINNING or threads == 1 else " (thread spinning off)")
        self.threads = threads

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.predict_outputs(x)[0]

    def predict_outputs(self, x: np.ndarray) -> list[np.ndarray]:
        """Every graph output, in the graph's order."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        fixed = [(i, d) for i, d in enumerate(self.input_shape[1:], 1) if isinstance(d, int)]
        if x.ndim != len(self.input_shape) or any(x.shape[i] != d for i, d in fixed):
            want = "x".join(str(d) if isinstance(d, int) else "N" for d in self.input_shape)
            raise ValueError(f"the model takes input {want} but the data is {'x'.join(map(str, x.shape))}: set "
                             f"model.input_size to the model's resolution, or export the model for this input size")
        if self.fixed_batch and x.shape[0] != self.input_shape[0]:
            parts = [self.predict_outputs(x[i : i + 1]) for i in range(len(x))]
            return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]
        return list(self.session.run(None, {self.input_name: x}))


def load(path: Path, meta: dict[str, Any], threads: int) -> OnnxModel:
    return OnnxModel(path, threads)


def describe(path: Path | str, meta: dict[str, Any]) -> dict[str, Any]:
    """Inputs and outputs read from the graph (pipeline.runtimes.describe)."""
    import onnx

    g = onnx.load(str(path), load_external_data=False).graph
    vi = lambda v: {"name": v.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name,
                    "shape": [d.dim_value if d.HasField("dim_value") else (d.dim_param or -1)
                              for d in v.type.tensor_type.shape.dim]}
    return {"inputs": [vi(v) for v in g.input], "outputs": [vi(v) for v in g.output]}
