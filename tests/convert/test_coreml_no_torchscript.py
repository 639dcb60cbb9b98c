"""The Core ML path is off TorchScript: coremltools converts a torch.export program. Proved by running the real
conversion with every TorchScript entry point made to fail, and by reading the modules on the path."""
from __future__ import annotations

import ast
import inspect

import pytest
import torch
from torch import nn

import pipeline.convert.coreml as coreml_convert
import pipeline.stages.export_coreml as coreml_stage


def test_conversion_runs_with_torchscript_disabled(tmp_path, monkeypatch):
    pytest.importorskip("coremltools")

    def refuse(*a, **k):
        raise AssertionError("TorchScript used on the Core ML path")

    for name in ("trace", "script", "trace_module", "freeze"):
        monkeypatch.setattr(torch.jit, name, refuse)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 2)).eval()
    path = tmp_path / "model.mlpackage"
    converter = coreml_convert.convert_torch(model, (1, 3, 8, 8), path, "fp32", "iOS17")
    assert path.exists() and "torch.export" in converter


@pytest.mark.parametrize("module", [coreml_convert, coreml_stage], ids=lambda m: m.__name__)
def test_no_torch_jit_in_the_core_ml_modules(module):
    tree = ast.parse(inspect.getsource(module))
    uses = [ast.unparse(n) for n in ast.walk(tree) if isinstance(n, ast.Attribute) and ast.unparse(n).startswith("torch.jit")]
    assert not uses, f"{module.__name__} still calls {uses}"
