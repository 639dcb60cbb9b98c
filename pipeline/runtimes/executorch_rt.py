"""ExecuTorch (`executorch.runtime`) on the CPU: runs a `.pte` with the XNNPACK delegate the wheel links in and
ExecuTorch's portable kernels for the rest.

The program is exported for batch 1, so a batch runs image by image. XNNPACK's thread pool is one per process
(`_unsafe_reset_threadpool` is the only knob the Python bindings expose); each model resets it to its own thread
count before it runs when another model changed it, so models timed round-robin in one process each get theirs.
"""
from __future__ import annotations

_RAN = False  # a program has run in this process: the thread pool keeps its size from then on

from pathlib import Path
from typing import Any

import numpy as np


def _threadpool():
    from executorch.extension.pybindings import portable_lib

    return portable_lib


class ExecutorchModel:
    def __init__(self, path: Path, meta: dict[str, Any], threads: int):
        from importlib import metadata

        from executorch.runtime import Runtime

        delegates = meta.get("executorch", {}).get("coverage", {}).get("delegates", {})
        if "CoreMLBackend" in delegates:
            raise ValueError(f"{path} is lowered to Core ML: it runs on Apple devices only (ExecuTorch's Linux wheel "
                             f"has no Core ML backend); export with partitioner=xnnpack to run it here")
        self.pool = _threadpool()
        self.threads = threads
        self._set_threads()
        try:
            self.program = Runtime.get().load_program(str(path))
            self.method = self.program.load_method("forward")
        except Exception as e:  # the bindings raise RuntimeError/ValueError with ExecuTorch error codes
            raise ValueError(f"ExecuTorch cannot load {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}. "
                             f"The file is corrupt or not a .pte program; re-create it (re-run with "
                             f"cache.force=[STAGE]) or supply a valid one.") from e
        self.input_shape = list(meta.get("input_shape") or meta.get("executorch", {}).get("input_shape") or [])
        backends = ", ".join(sorted(meta.get("executorch", {}).get("coverage", {}).get("delegates", {}))) or "XNNPACK"
        self.runtime = f"ExecuTorch {metadata.version('executorch')} CPU ({backends.replace('Backend', '')})"

    def _set_threads(self) -> None:
        """XNNPACK's thread pool is one per process and resizing it after a program has run can crash the process
        (the binding calls it unsafe): it is sized once, before the first inference; a later model asking for another
        count shares it, and `threads` says what it really gets."""
        if not _RAN and self.pool._threadpool_get_thread_count() != self.threads:
            self.pool._unsafe_reset_threadpool(self.threads)
        self.threads = self.pool._threadpool_get_thread_count()

    def predict(self, x: np.ndarray) -> np.ndarray:
        """float32 NCHW batch -> float32 logits, image by image (the program's batch is 1)."""
        import torch

        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.input_shape and (x.ndim != len(self.input_shape) or list(x.shape[1:]) != self.input_shape[1:]):
            want = "x".join(map(str, ["N", *self.input_shape[1:]]))
            raise ValueError(f"the program takes input {want} but the data is {'x'.join(map(str, x.shape))}: set "
                             f"model.input_size to the model's resolution, or export the model for this input size")
        self._set_threads()
        global _RAN
        _RAN = True
        # copied: the output tensor may alias the program's planned memory, which the next call overwrites
        outs = [self.method.execute([torch.from_numpy(x[i : i + 1])])[0].numpy().copy() for i in range(len(x))]
        return np.concatenate(outs).astype(np.float32, copy=False)


def load(path: Path, meta: dict[str, Any], threads: int) -> ExecutorchModel:
    return ExecutorchModel(path, meta, threads)


def not_runnable_here(meta: dict[str, Any] | None = None) -> str | None:
    """Why a `.pte` cannot run on this host, or None: ExecuTorch missing, or a program lowered to a delegate the
    Linux wheel lacks (Core ML)."""
    import importlib.util

    if importlib.util.find_spec("executorch") is None:
        return "not runnable on this host (the executorch package is not installed)"
    delegates = ((meta or {}).get("executorch") or {}).get("coverage", {}).get("delegates", {})
    if "CoreMLBackend" in delegates:
        return "not runnable on this host (lowered to Core ML: ExecuTorch runs it on Apple devices only)"
    return None


def describe(path: Path | str, meta: dict[str, Any]) -> dict[str, Any]:
    """The program's input and its delegate coverage (pipeline.runtimes.describe)."""
    from pipeline.convert.executorch import coverage

    shape = meta.get("input_shape")
    return {"inputs": [{"name": "input", "dtype": "float32", "shape": shape}] if shape else [],
            "outputs": [{"name": "logits", "dtype": "float32"}], "coverage": coverage(path)}
