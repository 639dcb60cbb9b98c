"""Core ML: export and weight compression on a small real model, weight storage read back from the package, and the
not-runnable path (Linux) through the real runner: evaluate/benchmark report it and never a number."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline import app
from pipeline.report.schema import Summary
from pipeline.report.table import summary_table
from pipeline.core.artifacts import path_size
from pipeline.core.errors import NotRunnableHere
from pipeline.runtimes import coreml_rt

pytest.importorskip("coremltools")


@pytest.fixture(scope="module")
def iphone_run(tmp_path_factory):
    """tiny_int8 made device-driven for an iPhone: train -> Core ML fp16 package -> int8 weights -> evaluate/bench."""
    from conftest import compose_cfg

    out = tmp_path_factory.mktemp("coreml") / "outputs"
    cfg = compose_cfg(["recipe=tiny_int8", "device=iphone15", "tracking=none", "stages.export.type=export",
                       "stages.quantize.type=quantize", "model.width_mult=1.0"], out)
    return app.run(cfg).to_dict()


@pytest.mark.slow
def test_package_weights_are_int8_and_smaller(iphone_run):
    s = iphone_run
    arts = {a["name"]: a for a in s["artifacts"]}
    export, quant = arts["export"], arts["quantize"]
    assert (export["format"], export["precision"]) == ("coreml", "fp16")
    assert (quant["format"], quant["precision"]) == ("coreml", "int8-weights")
    run_dir = Path(s["run_dir"])
    info = coreml_rt.inspect(run_dir / quant["path"])
    assert info["model_type"] == "mlProgram" and info["opset"].startswith("CoreML")
    assert info["compressed_weight_ops"].get("constexpr_affine_dequantize", 0) > 0
    assert info["weight_share_by_dtype"]["int8"] > 0.9, info["weight_elements_by_dtype"]
    assert coreml_rt.inspect(run_dir / export["path"])["weight_share_by_dtype"]["float16"] > 0.99
    assert quant["verdict"]["size_ratio"] <= 0.55  # against the fp16 package of the same model
    assert quant["verdict"]["baseline"] == "export"


@pytest.mark.skipif(sys.platform == "darwin", reason="Core ML runs on macOS")
def test_not_runnable_here_is_reported_not_measured(iphone_run):
    s = iphone_run
    assert s["status"] == "success"
    arts = {a["name"]: a for a in s["artifacts"]}
    for name in ("export", "quantize"):
        a = arts[name]
        assert a["not_runnable"] == "not runnable on this host (Core ML needs macOS)"
        assert a["accuracy"] is None and a["latency_ms"] is None
    assert arts["train"]["accuracy"] is not None  # the PyTorch model still ran
    table = summary_table(Summary.from_dict(s), color=False)
    assert "not runnable on this host (Core ML needs macOS)" in table
    saved = json.loads((Path(s["run_dir"]) / "summary.json").read_text())
    assert saved["artifacts"][2]["not_runnable"].startswith("not runnable on this host")
    with pytest.raises(NotRunnableHere):
        coreml_rt.load(Path(s["run_dir"]) / arts["export"]["path"], {}, threads=1)


def test_deployment_target_comes_from_the_device(iphone_run):
    s = iphone_run
    arts = {a["name"]: a for a in s["artifacts"]}
    spec_version = coreml_rt.inspect(Path(s["run_dir"]) / arts["export"]["path"])["specification_version"]
    assert spec_version == 8  # iOS17 (conf/device/iphone15.yaml) is Core ML specification 8


@pytest.mark.slow
def test_palettization(iphone_run, tmp_path):
    import coremltools as ct
    import coremltools.optimize.coreml as cto

    src = Path(iphone_run["run_dir"]) / {a["name"]: a for a in iphone_run["artifacts"]}["export"]["path"]
    ml = ct.models.MLModel(str(src), skip_model_load=True)
    out = cto.palettize_weights(ml, config=cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(nbits=4)))
    out.save(str(tmp_path / "p.mlpackage"))
    info = coreml_rt.inspect(tmp_path / "p.mlpackage")
    assert "constexpr_lut_to_dense" in info["compressed_weight_ops"]
    assert path_size(tmp_path / "p.mlpackage") < 0.4 * path_size(src)


@pytest.mark.skipif(sys.platform != "darwin", reason="Core ML prediction needs macOS")
def test_runs_on_macos(iphone_run):  # pragma: no cover - macOS only
    arts = {a["name"]: a for a in iphone_run["artifacts"]}
    assert arts["quantize"]["accuracy"] is not None and arts["quantize"]["latency_ms"]["p50"] > 0
