"""Keras (TensorFlow backend) on the CPU; models stored by pipeline.models.keras_zoo (NHWC input, transposed here)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


class KerasModel:
    def __init__(self, path: Path, threads: int, modules: list[str] | tuple[str, ...] = ()):
        import keras

        from pipeline.models import keras_zoo

        keras_zoo.set_threads(threads)
        try:
            self.model = keras_zoo.load(path, modules)
        except Exception as e:  # keras raises ValueError/OSError/zipfile errors for corrupt files
            raise ValueError(f"Keras cannot load {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}. "
                             f"Re-create it (re-run with cache.force=[STAGE]).") from e
        self.runtime = f"keras {keras.__version__} (TensorFlow CPU)"
        self.threads = threads

    def predict_outputs(self, x: np.ndarray) -> list[np.ndarray]:
        """Every output of the model, in the order of model.outputs (NCHW batch in, transposed to NHWC here)."""
        from pipeline.models import keras_zoo

        return keras_zoo.predict_outputs(self.model, np.asarray(x, dtype=np.float32))

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.predict_outputs(x)[0]


def load(path: Path, meta: dict[str, Any], threads: int) -> KerasModel:
    return KerasModel(path, threads, tuple(meta.get("keras_modules") or ()))
