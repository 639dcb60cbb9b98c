"""PyTorch eager on the CPU (models stored by pipeline.models.save_torch: state_dict + architecture JSON)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


class TorchModel:
    def __init__(self, path: Path, threads: int):
        import torch

        from pipeline.models import load_torch

        torch.set_num_threads(threads)
        self.torch = torch
        self.model, self.spec = load_torch(path)
        self.runtime = f"torch {torch.__version__} eager"
        self.threads = threads

    def predict_outputs(self, x: np.ndarray) -> list[np.ndarray]:
        """Every output of the module, in the order it returns them (a detector returns a tuple)."""
        with self.torch.inference_mode():
            out = self.model(self.torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
        outs = out if isinstance(out, (tuple, list)) else [out]
        return [o.numpy() for o in outs]

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.predict_outputs(x)[0]


def load(path: Path, meta: dict[str, Any], threads: int) -> TorchModel:
    return TorchModel(path, threads)
