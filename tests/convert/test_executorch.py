"""ExecuTorch export: fp32 and int8 `.pte` lowered to XNNPACK, run with the ExecuTorch runtime, coverage read back
from the file."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pipeline import runtimes
from pipeline.convert import executorch as et


class Tiny(nn.Module):
    """Conv-BN-ReLU6, a depthwise conv, a residual add, pooling and a classifier: MobileNetV2's operator kinds."""

    def __init__(self, classes: int = 4, pool: str = "adaptive"):
        super().__init__()
        self.pool = pool
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU6())
        self.dw = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8), nn.ReLU6())
        self.head = nn.Linear(8, classes)

    def forward(self, x):
        y = self.stem(x)
        y = y + self.dw(y)
        # MobileNetV2 pools with AdaptiveAvgPool2d (XNNPACK's global average pooling); a plain mean over H and W
        # without keepdim is an operator XNNPACK's partitioner leaves to the portable kernels
        y = torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1) if self.pool == "adaptive" else y.mean((2, 3))
        return self.head(y)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    m = Tiny().eval()
    with torch.no_grad():  # non-trivial batch-norm statistics, so folding is exercised
        for bn in (m.stem[1], m.dw[1]):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    return m


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).standard_normal((24, 3, 16, 16)).astype(np.float32)


def test_fp32_pte_matches_torch_and_xnnpack_takes_every_op(tmp_path_factory, tiny, images):
    path = tmp_path_factory.mktemp("et") / "model.pte"
    facts = et.export_pte(tiny, (1, 3, 16, 16), path)
    cov = facts["coverage"]
    assert set(cov["delegates"]) == {"XnnpackBackend"} and cov["all_delegated"], cov
    assert cov["portable_operators"] == {} and cov["xnnpack_operators"].get("Conv2d") == 1, cov
    assert cov["xnnpack_operators"].get("DepthwiseConv2d") == 1 and cov["xnnpack_operators"].get("Add") == 1
    assert facts["delegation"]["by_operator"]["aten_convolution_default"] == {"delegated": 2, "non_delegated": 0}
    assert "none left to portable kernels" in et.coverage_line(cov)
    model = runtimes.load("executorch", path, {"input_shape": [1, 3, 16, 16], "executorch": facts}, threads=1)
    assert model.runtime.startswith("ExecuTorch ") and "Xnnpack" in model.runtime
    with torch.no_grad():
        ref = tiny(torch.from_numpy(images)).numpy()
    got = model.predict(images)  # a batch of 24 runs image by image through a batch-1 program
    assert got.shape == ref.shape and np.abs(got - ref).max() < 1e-4


@pytest.mark.slow
def test_int8_pte_is_lowered_and_close_to_float(tmp_path_factory, tiny, images):
    path = tmp_path_factory.mktemp("et8") / "model.int8.pte"
    facts = et.quantize_pte(tiny, (1, 3, 16, 16), images[:16], path)
    assert facts["coverage"]["all_delegated"], facts["coverage"]
    assert facts["quantization"]["calibration_samples"] == 16
    model = runtimes.load("executorch", path, {"input_shape": [1, 3, 16, 16]}, threads=2)
    with torch.no_grad():
        ref = tiny(torch.from_numpy(images)).numpy()
    got = model.predict(images)
    cos = (got * ref).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1))
    assert cos.min() > 0.95, cos  # int8 error, not a different model
    assert np.abs(got - ref).max() > 0  # and really quantized


@pytest.mark.slow
def test_a_partial_lowering_lists_the_portable_operators(tmp_path):
    path = tmp_path / "mean.pte"
    cov = et.export_pte(Tiny(pool="mean").eval(), (1, 3, 16, 16), path)["coverage"]
    assert not cov["all_delegated"]
    assert cov["portable_operators"] == {"aten::mean.out": 1}, cov
    assert "1 left to portable kernels (aten::mean.out x1)" in et.coverage_line(cov)
    # and it still runs: the portable kernel computes what XNNPACK did not take
    x = np.random.default_rng(1).standard_normal((2, 3, 16, 16)).astype(np.float32)
    assert runtimes.load("executorch", path, {"input_shape": [1, 3, 16, 16]}, threads=1).predict(x).shape == (2, 4)


def test_not_a_pte_is_named_with_the_fix(tmp_path):
    bad = tmp_path / "model.pte"
    bad.write_bytes(b"not a program")
    with pytest.raises(ValueError, match="not an ExecuTorch program.*cache.force"):
        et.coverage(bad)
    with pytest.raises(ValueError, match="ExecuTorch cannot load .*cache.force"):
        runtimes.load("executorch", bad, {}, threads=1)


def test_wrong_input_size_is_named(tmp_path_factory, tiny):
    path = tmp_path_factory.mktemp("etw") / "model.pte"
    et.export_pte(tiny, (1, 3, 16, 16), path)
    model = runtimes.load("executorch", path, {"input_shape": [1, 3, 16, 16]}, threads=1)
    with pytest.raises(ValueError, match="takes input Nx3x16x16 but the data is 2x3x8x8"):
        model.predict(np.zeros((2, 3, 8, 8), np.float32))


def test_core_ml_partitioner_lowers_for_apple_devices(tmp_path, tiny):
    pytest.importorskip("coremltools")
    path = tmp_path / "model.coreml.pte"
    facts = et.export_pte(tiny, (1, 3, 16, 16), path, "coreml", deployment_target="iOS17")
    cov = facts["coverage"]
    assert cov["delegates"] == {"CoreMLBackend": 1} and cov["all_delegated"], cov
    assert et.coverage_line(cov) == "delegates: CoreMLBackend x1, none left to portable kernels"
    with pytest.raises(ValueError, match="runs on Apple devices only.*partitioner=xnnpack"):
        runtimes.load("executorch", path, {"input_shape": [1, 3, 16, 16], "executorch": facts}, threads=1)
