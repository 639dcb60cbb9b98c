"""The model zoo, defined in this package (torchvision cannot load with a CPU-only torch).

`ZOO` maps a name to "module:Class" so that planning can list and check names without importing torch.
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

ZOO: dict[str, str] = {
    "mobilenet_v2": "pipeline.models.mobilenet_v2:MobileNetV2",
    "keras_mobilenet_v2": "pipeline.models.keras_zoo:mobilenet_v2",
}
# Models not written in PyTorch; the train stage dispatches on this and produces their format.
FRAMEWORKS: dict[str, str] = {"keras_mobilenet_v2": "keras"}


def framework(name: str) -> str:
    """'torch' or 'keras': how a zoo model is built, trained and stored."""
    return FRAMEWORKS.get(name, "torch")


def build(name: str, num_classes: int, **kwargs: Any):
    """Instantiate a zoo model; kwargs the architecture does not take are refused with the accepted ones listed."""
    module, cls_name = ZOO[name].split(":")
    cls = getattr(importlib.import_module(module), cls_name)
    import inspect

    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = set(kwargs) - accepted
    if unknown:
        raise TypeError(f"model {name!r} does not take {sorted(unknown)}; it takes {sorted(accepted)}")
    return cls(num_classes=num_classes, **kwargs)


def arch_kwargs(model_cfg: Any) -> dict[str, Any]:
    """The architecture knobs of the model config (input size is a property of the data, not of the weights)."""
    return {"width_mult": float(model_cfg.width_mult), "dropout": float(model_cfg.dropout)}


def save_torch(model, directory: Path, spec: dict[str, Any]) -> Path:
    """Store a PyTorch model as state_dict + JSON architecture spec: loadable with weights_only=True, no pickle."""
    import torch

    directory.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), directory / "model.pt")
    (directory / "model.json").write_text(json.dumps(spec, indent=2))
    return directory / "model.pt"


def load_torch(path: Path):
    """Rebuild a model stored by `save_torch`. Never unpickles: weights_only=True refuses anything but tensors, so a
    checkpoint from elsewhere cannot run code; a truncated or foreign file is named with the fix."""
    import torch

    path = Path(path)
    fix = ("re-create it (re-run with cache.force=[STAGE]) or supply a state_dict saved with "
           "torch.save(model.state_dict(), PATH) next to its model.json")
    try:
        spec = json.loads((path.parent / "model.json").read_text())
        model = build(spec["name"], spec["num_classes"], **spec["kwargs"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"cannot rebuild the architecture of {path} from {path.parent / 'model.json'} ({e}); {fix}") from e
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises RuntimeError/UnpicklingError/EOFError... for damaged or unsafe files
        reason = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        kind = ("it holds more than tensors (a pickled object), which is refused because unpickling can run code"
                if "weights_only" in str(e).lower() or "Unsupported global" in str(e) else "it is truncated or corrupt")
        raise ValueError(f"cannot load PyTorch checkpoint {path}: {kind} ({reason}); {fix}") from None
    if not isinstance(state, dict):
        raise ValueError(f"cannot load PyTorch checkpoint {path}: it holds a {type(state).__name__}, not a state_dict; {fix}")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"PyTorch checkpoint {path} does not fit the architecture in model.json "
                         f"({str(e).splitlines()[0][:300]}); {fix}") from None
    return model.eval(), spec
