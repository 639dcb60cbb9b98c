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

    def predict(self, x: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            return self.model(self.torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()


def load(path: Path, meta: dict[str, Any], threads: int) -> TorchModel:
    return TorchModel(path, threads)
