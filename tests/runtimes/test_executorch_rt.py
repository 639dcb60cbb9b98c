"""ExecuTorch runtime: each model keeps its own thread count when several share the process's XNNPACK thread pool,
and models are timed side by side by the benchmark's measuring process."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pipeline import runtimes
from pipeline.convert.executorch import export_pte
from pipeline.runtimes import executorch_rt, measure


@pytest.fixture(scope="module")
def pte(tmp_path_factory):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 3)).eval()
    path = tmp_path_factory.mktemp("etrt") / "model.pte"
    facts = export_pte(model, (1, 3, 8, 8), path)
    return path, {"input_shape": [1, 3, 8, 8], "executorch": facts}


def test_the_thread_pool_is_sized_once_and_later_models_say_what_they_get(pte):
    path, meta = pte
    pool = executorch_rt._threadpool()
    x = np.zeros((2, 3, 8, 8), np.float32)
    first = runtimes.load("executorch", path, meta, threads=1)
    first.predict(x)
    size = pool._threadpool_get_thread_count()
    assert size == first.threads  # 1, unless another test of this process ran a program first
    other = runtimes.load("executorch", path, meta, threads=2)
    other.predict(x)  # no resize after a program ran: resizing then can crash the process
    assert pool._threadpool_get_thread_count() == size and other.threads == size


def test_measured_side_by_side_with_another_runtime(pte, tmp_path):
    path, meta = pte
    from pipeline.convert.openvino import export_ir

    model = nn.Sequential(nn.Flatten(), nn.Linear(192, 3)).eval()
    export_ir(model, (1, 3, 8, 8), tmp_path / "model.xml")
    out = measure.measure([{"name": "et", "fmt": "executorch", "path": str(path), "meta": meta, "shape": [1, 3, 8, 8]},
                           {"name": "ov", "fmt": "openvino", "path": str(tmp_path / "model.xml"),
                            "meta": {"openvino": {"inference_precision": "f32"}}, "shape": [1, 3, 8, 8]}],
                          threads=1, warmup=2, iterations=5)
    assert out["models"]["et"]["runtime"].startswith("ExecuTorch") and out["models"]["et"]["latency_p50_ms"] > 0
    assert out["models"]["ov"]["runtime"].startswith("OpenVINO") and out["models"]["ov"]["latency_p50_ms"] > 0


def test_describe_reads_the_coverage_from_the_file(pte):
    path, meta = pte
    info = runtimes.describe("executorch", path, meta)
    assert info["coverage"]["all_delegated"] and info["inputs"][0]["shape"] == [1, 3, 8, 8]


def test_not_runnable_here_names_a_core_ml_program():
    from pipeline.runtimes.executorch_rt import not_runnable_here

    assert not_runnable_here() is None
    why = not_runnable_here({"executorch": {"coverage": {"delegates": {"CoreMLBackend": 1}}}})
    assert why and "Core ML" in why and "Apple" in why
