"""`profile` on an ExecuTorch `.pte`: the delegate coverage read from the file (operators lowered to XNNPACK vs left
to ExecuTorch's portable kernels) in the findings, profile.json and the chart. MobileNetV2 lowers completely."""
from __future__ import annotations

import json
import logging

import pytest
import torch

from conftest import compose_cfg
from pipeline.core import settings
from pipeline.core.artifacts import Artifact
from pipeline.convert import executorch as et
from pipeline.models import build
from pipeline.stages.base import StageContext
from pipeline.stages.profile import Profile, ProfileConfig


def _profile(tmp_path, pte, precision="fp32"):
    cfg = compose_cfg(["device=pixel7", "tracking=none"], tmp_path / "outputs")
    work = tmp_path / "work"
    work.mkdir()
    art = Artifact("export", "executorch", precision, pte, {"input_shape": [1, 3, 32, 32]})
    ctx = StageContext(name="profile[export]", params=ProfileConfig(),
                       settings=settings.resolve("profile", Profile.reads, cfg), inputs={"export": art}, workdir=work,
                       lineage=lambda s: [], log=logging.getLogger("test"))
    return Profile().run(ctx), work


@pytest.fixture(scope="module")
def mobilenet_pte(tmp_path_factory):
    torch.manual_seed(0)
    model = build("mobilenet_v2", 10, width_mult=0.35).eval()
    path = tmp_path_factory.mktemp("pte") / "model.pte"
    et.export_pte(model, (1, 3, 32, 32), path)
    return path


@pytest.mark.slow
def test_mobilenet_v2_pte_is_all_xnnpack(tmp_path, mobilenet_pte):
    result, work = _profile(tmp_path, mobilenet_pte)
    f = result.about["export"]
    assert f.coverage["all_delegated"] is True and f.coverage["portable"] == 0, f.coverage
    assert f.coverage["delegate"] == "XNNPACK" and f.coverage["supported"] == f.coverage["total"] > 50
    assert f.coverage_summary.startswith("XNNPACK: ") and "none left to portable kernels" in f.coverage_summary
    doc = json.loads((work / "profile.json").read_text())
    ops = {d["op"]: d for d in doc["coverage_detail"]}
    assert {d["runs_on"] for d in ops.values()} == {"XNNPACK"}
    assert ops["Conv2d"]["count"] > 0 and ops["DepthwiseConv2d"]["count"] == 17  # MobileNetV2's 17 blocks
    assert result.metrics["portable_operators"] == 0 and (work / "profile.png").stat().st_size > 0
    assert "not a measurement" not in json.dumps(doc["summary"]) and doc["summary"]["estimate"] is None


def test_operators_left_to_portable_kernels_are_listed(tmp_path):
    class MeanHead(torch.nn.Module):  # a mean without keepdim: XNNPACK's partitioner leaves it to portable kernels
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x):
            return self.conv(x).mean((2, 3))

    pte = tmp_path / "mean.pte"
    et.export_pte(MeanHead().eval(), (1, 3, 32, 32), pte)
    result, work = _profile(tmp_path, pte)
    f = result.about["export"]
    assert f.coverage["all_delegated"] is False and f.coverage["portable"] == 1, f.coverage
    assert "1 left to portable kernels (aten::mean.out x1)" in f.coverage_summary
    detail = json.loads((work / "profile.json").read_text())["coverage_detail"]
    assert {"op": "aten::mean.out", "count": 1, "runs_on": "portable kernels"} in detail
