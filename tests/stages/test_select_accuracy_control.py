"""Accuracy-controlled int8 in the measured choice: on a model whose plain int8 breaks (one activation channel with a
huge constant outlier crushes the others to zero), every plain int8 candidate misses the budget, NNCF's accuracy
control (OpenVINO and ONNX) meets it by keeping the one layer behind the outlier in float, and the choice lists that
layer with what it costs in size and latency against plain int8, timed side by side."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch import nn

from conftest import compose_cfg
from pipeline.core import settings
from pipeline.core.artifacts import Artifact
from pipeline.convert.onnx import export_torch
from pipeline.data import Dataset
from pipeline.stages.base import StageContext
from pipeline.stages.select import SelectInt8, SelectInt8Config

SHAPE = [1, 3, 4, 4]


class Outlier(nn.Module):
    """fc1's channel 0 is always 1000 (zero weights, bias 1000) and fc2 ignores it: per-tensor int8 of fc2's input
    gets a scale of ~4, the informative channels round to zero and plain int8 predicts one class."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(48, 8), nn.Linear(8, 4)
        with torch.no_grad():
            self.fc1.weight[0] = 0.0
            self.fc1.bias[0] = 1000.0
            self.fc2.weight[:, 0] = 0.0
            self.fc2.bias.zero_()

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))


@pytest.fixture(scope="module")
def selection(tmp_path_factory):
    torch.manual_seed(0)
    model = Outlier().eval()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((240, *SHAPE[1:])).astype(np.float32)
    with torch.no_grad():
        y = model(torch.from_numpy(x)).numpy().argmax(1)  # labels = the float model's answers: fp32 top-1 is 100%
    data = Dataset(x[:160], y[:160], x[160:], y[160:], ["a", "b", "c", "d"])
    tmp = tmp_path_factory.mktemp("select_ac")
    onnx_path = tmp / "model.onnx"
    export_torch(model, SHAPE, onnx_path)
    cfg = compose_cfg(["device=host", "tracking=none", "gate.max_accuracy_drop=5"], tmp / "outputs")
    work = tmp / "work"
    work.mkdir()
    params = SelectInt8Config(calibration_samples=32, accuracy_control_samples=100, accuracy_control_max_drop=5,
                              warmup=2, iterations=20,
                              candidates=["ort_per_channel_u8", "ort_nncf_int8", "ort_int8_accuracy_control",
                                          "openvino_int8", "openvino_int8_accuracy_control", "executorch_int8"])
    ctx = StageContext(name="quantize", params=params, settings=settings.resolve("select_int8", SelectInt8.reads, cfg),
                       inputs={"export": Artifact("export", "onnx", "fp32", onnx_path, {"input_shape": SHAPE})},
                       workdir=work, lineage=lambda s: [], log=logging.getLogger("test"), _data_loader=lambda: data)
    return SelectInt8().run(ctx), work


@pytest.mark.slow
def test_plain_int8_misses_the_budget_and_accuracy_control_meets_it(selection):
    result, _ = selection
    sel = result.info["selection"]
    rows = {r["name"]: r for r in sel["candidates"]}
    assert rows["ort_fp32"]["accuracy"] == 1.0 and sel["budget_points"] == 5
    for plain in ("ort_per_channel_u8", "ort_nncf_int8", "openvino_int8"):
        assert not rows[plain]["passed"] and rows[plain]["accuracy_drop_points"] > 20, rows[plain]
        assert rows[plain]["lost_because"].startswith("loses ")
    for ac, plain in (("ort_int8_accuracy_control", "ort_nncf_int8"),
                      ("openvino_int8_accuracy_control", "openvino_int8")):
        r = rows[ac]
        assert r["passed"] and r["accuracy_drop_points"] <= 5, r
        assert r["kept_in_float"] == ["fc2"], r  # the layer behind the outlier, and only it
        cost = r["float_layers_cost"]
        assert cost["vs"] == plain and cost["layers"] == 1
        assert cost["size_bytes"] == r["size_bytes"] - rows[plain]["size_bytes"]
        assert cost["p50_ms"] == pytest.approx(r["latency_p50_ms"] - rows[plain]["latency_p50_ms"])
        assert cost["latency_ratio_ci"][0] <= cost["latency_ratio"] <= cost["latency_ratio_ci"][1]
        assert cost["accuracy_points_recovered"] > 20
    chosen = rows[sel["chosen"]]
    assert sel["chosen"] in ("ort_int8_accuracy_control", "openvino_int8_accuracy_control") and chosen["chosen"]
    assert sel["kept_in_float"] == ["fc2"] and result.metrics["layers_in_float"] == 1
    assert result.artifact.precision == "int8" and result.artifact.format == chosen["format"]
    assert result.artifact.path.is_file()


def test_a_candidate_that_cannot_be_made_says_why_and_the_table_lists_everything(selection):
    result, work = selection
    sel = result.info["selection"]
    skipped = {n["name"]: n["reason"] for n in sel["not_runnable"]}
    assert "PyTorch model" in skipped["executorch_int8"]  # no torch model upstream of an imported ONNX file
    md = (work / "select_int8.md").read_text()
    for r in sel["candidates"]:
        assert f"| {r['name']} |" in md
    assert "kept in float: fc2" in md and "keeps 1 layer(s) in float (fc2)" in md
    assert skipped["executorch_int8"] in md and "load average" in md
    assert not (work / "candidates").exists()  # the losers are listed, not kept
