"""Core ML: runs only on macOS (coremltools' prediction needs Apple's Core ML framework). Elsewhere `load` raises
NotRunnableHere, which the runner reports as "not runnable on this host" and never as a number; `inspect` reads the
package instead (operators, how the weights are stored, size), which works on any OS.
"""
from __future__ import annotations

import platform
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.errors import NotRunnableHere

NOT_RUNNABLE = "not runnable on this host (Core ML needs macOS)"


def runnable_here() -> bool:
    return sys.platform == "darwin"


def not_runnable_here() -> str | None:
    return None if runnable_here() else NOT_RUNNABLE


class CoremlModel:  # pragma: no cover - macOS only; tests/runtimes/test_coreml_rt.py runs it there
    def __init__(self, path: Path, meta: dict[str, Any], threads: int):
        import coremltools as ct

        self.model = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit.CPU_ONLY)
        spec = self.model.get_spec()
        self.input_name = spec.description.input[0].name
        self.output_name = spec.description.output[0].name
        self.runtime = f"Core ML (coremltools {ct.__version__}, CPU_ONLY, macOS {platform.mac_ver()[0]})"
        self.threads = threads

    def predict_outputs(self, x: np.ndarray) -> list[np.ndarray]:
        """Every output of the package, in the order of its spec, each with its own shape."""
        x = np.asarray(x, dtype=np.float32)
        names = [o.name for o in self.model.get_spec().description.output]
        runs = [self.model.predict({self.input_name: x[i : i + 1]}) for i in range(len(x))]
        return [np.concatenate([np.asarray(r[n], dtype=np.float32).reshape(1, *np.shape(r[n])[1:]) for r in runs])
                for n in names]

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        outs = [self.model.predict({self.input_name: x[i : i + 1]})[self.output_name] for i in range(len(x))]
        return np.concatenate([np.asarray(o, dtype=np.float32).reshape(1, -1) for o in outs])


def load(path: Path, meta: dict[str, Any], threads: int) -> CoremlModel:
    if not runnable_here():
        raise NotRunnableHere(NOT_RUNNABLE)
    return CoremlModel(path, meta, threads)


def inspect(path: Path | str) -> dict[str, Any]:
    """What an .mlpackage holds, read from its spec and MIL program: model type, operator counts, and how many weight
    elements are stored in each data type (int8 for linear quantization, uint8 LUT indices for palettization)."""
    import coremltools as ct
    from coremltools.proto import MIL_pb2

    spec = ct.utils.load_spec(str(path))
    dtype = {v: k.lower() for k, v in MIL_pb2.DataType.items()}
    info: dict[str, Any] = {"model_type": spec.WhichOneof("Type"), "specification_version": spec.specificationVersion}
    io = lambda fs: [{"name": f.name, "shape": [int(s) for s in f.type.multiArrayType.shape]} for f in fs]
    info.update(inputs=io(spec.description.input), outputs=io(spec.description.output))
    if info["model_type"] != "mlProgram":
        return info
    fn = spec.mlProgram.functions["main"]
    block = fn.block_specializations[fn.opset]
    ops = Counter(op.type for op in block.operations)
    weights: Counter = Counter()  # storage dtype -> elements
    for op in block.operations:
        if op.type == "const" or op.type.startswith("constexpr"):
            for name, val in op.attributes.items():
                if val.type.WhichOneof("type") != "tensorType" or name not in ("val", "quantized_data", "indices", "data"):
                    continue
                tt = val.type.tensorType
                n = int(np.prod([d.constant.size for d in tt.dimensions])) if tt.dimensions else 1
                if n > 1:  # scalars are attributes, not weights
                    weights[dtype.get(tt.dataType, str(tt.dataType))] += n
    total = sum(weights.values()) or 1
    compute = sorted({o for o in ops if not o.startswith("const")})
    info.update(opset=fn.opset, operators=dict(sorted(ops.items())),
                operator_count=sum(n for o, n in ops.items() if not o.startswith("const")),
                compute_operators=compute, weight_elements_by_dtype=dict(weights),
                weight_share_by_dtype={k: v / total for k, v in weights.items()},
                compressed_weight_ops={o: n for o, n in ops.items() if o.startswith("constexpr")})
    return info


def describe(path: Path | str, meta: dict[str, Any]) -> dict[str, Any]:
    """The interface read from the package's spec (pipeline.runtimes.describe)."""
    info = inspect(path)
    out = {k: info.get(k) for k in ("inputs", "outputs", "model_type", "opset", "operators", "weight_elements_by_dtype")}
    out["deployment_target"] = meta.get("coreml", {}).get("deployment_target")
    return out
