"""The measurement store (a real SQLite file), the refit from it, the gate's judge, and plan-time checks of the new
device fields."""
from __future__ import annotations

import math
import sqlite3

import numpy as np
import pytest
from omegaconf import OmegaConf

from pipeline.devices import budgets, catalog, fit, store
from pipeline.devices.profiler import profile_onnx


def conv_onnx(path, channels: int, size: int):
    """input [1,3,size,size] -> Conv 3x3 (channels) -> Relu -> GlobalAveragePool: a graph of known MACs."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((channels, 3, 3, 3), np.float32), "w")
    nodes = [helper.make_node("Conv", ["input", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["out"])]
    g = helper.make_graph(nodes, "c", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, size, size])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, channels, 1, 1])], [w])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def _result(p50):
    on = {"device": "Raspberry Pi 4", "connection": "ssh://pi@rpi:22", "runtime": "onnxruntime CPUExecutionProvider",
          "version": "1.31.1", "threads": 4}
    return {"models": {"m": {"latency_p50_ms": p50, "latency_p90_ms": p50 * 1.1, "latency_mean_ms": p50,
                             "load_ms": 5.0, "runtime": on["runtime"], "version": "1.31.1", "samples": 30,
                             "measured_on": on}},
            "threads": 4, "cpu": "Cortex-A72", "peak_rss_mb": 50.0}


def test_store_round_trip_and_refit_from_it(tmp_path):
    db = tmp_path / "outputs" / store.FILENAME
    rpi4 = {"name": "rpi4"}
    truth = {}
    for i, (ch, size) in enumerate([(16, 32), (32, 32), (64, 32), (32, 64)]):
        path = conv_onnx(tmp_path / f"m{i}.onnx", ch, size)
        macs = ch * 27 * size * size
        truth[i] = 2 * macs / (96e9 / 4 * 4 * 0.2) * 1e3 + 0.02  # a board at 20% of its peak, 20 us overhead
        n = store.record_measurement(db, rpi4, _result(truth[i]), [{"name": "m", "fmt": "onnx", "path": str(path),
                                                                    "precision": "fp32"}])
        assert n == 1
    rows = store.rows(db)
    assert len(rows) == 4 and {r["device"] for r in rows} == {"rpi4"}
    r = rows[0]
    assert (r["runtime"], r["runtime_version"], r["precision"], r["threads"]) == (
        "onnxruntime CPUExecutionProvider", "1.31.1", "fp32", 4)
    prof = store.profile(db, r["fingerprint"])
    assert prof.totals()["macs"] == profile_onnx(tmp_path / "m0.onnx").totals()["macs"]
    pts = fit.store_points(db)
    assert [p.generation for p in pts] == ["onnxruntime"] * 4 and all("[M] measured" in p.source for p in pts)
    result = fit.fit(pts)
    cpu = result["kinds"]["cpu"]
    assert cpu["points"] == 4 and all("measured" in f for f in cpu["fitted_on"])
    assert cpu["in_sample_error_pct"] < 10  # the fit finds the board's efficiency from its own measurements


def test_a_failed_record_writes_nothing(tmp_path):
    db = tmp_path / store.FILENAME
    good = {"device": "rpi4", "runtime": "x", "fingerprint": "f1", "latency_p50_ms": 1.0}
    with pytest.raises(ValueError, match="without fingerprint"):
        store.record(db, [good, {"device": "rpi4", "runtime": "x"}])
    assert store.rows(db) == []  # one transaction: the good row went too
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT count(*) FROM measurements").fetchone()[0] == 0


ROW = {"name": "quantize", "size_bytes": 1e6, "ram_estimate_mb": 10.0, "latency_ms": None,
       "estimate": {"latency_ms": 40.0, "upper_ms": 55.0, "label": "80% interval 30-55 ms, estimate for Raspberry Pi 4"}}


def test_gate_judges_point_or_upper_and_a_device_measurement_wins():
    limits = {"latency_ms": 50.0, "fps": None, "model_mb": None, "ram_mb": None, "max_accuracy_drop": 1.0}
    assert budgets.verdict(ROW, limits, "rpi4")["pass"] is True
    up = budgets.verdict(ROW, limits, "rpi4", judge="upper")
    assert up["pass"] is False and up["checks"][0]["value"] == 55.0 and "upper end" in up["checks"][0]["source"]
    measured = {**ROW, "device_latency_ms": {"p50": 45.0, "p90": 47.0},
                "measured_on_device": {"device": "Raspberry Pi 4", "connection": "ssh://pi@rpi", "runtime": "LiteRT",
                                       "version": "2.3.0"}}
    v = budgets.verdict(measured, limits, "rpi4", judge="upper")
    assert v["pass"] is True and v["checks"][0]["source"] == "measured on Raspberry Pi 4 (ssh://pi@rpi), LiteRT 2.3.0"


def test_plan_checks_connection_and_judge():
    cfg = OmegaConf.create({"device": OmegaConf.to_container(catalog.load("rpi4")), "gate": {"judge": "median"}})
    cfg.device.connection = "ssh://pi:pw@rpi"
    problems = catalog.plan_problems(cfg, ["export"])
    assert any("password in the connection string is refused" in p for p in problems)
    assert any("gate.judge: 'median' is not one of point, upper" in p for p in problems)
    host = OmegaConf.create({"device": OmegaConf.to_container(catalog.load("host")), "gate": {}})
    host.device.connection = "ssh://pi@rpi"
    assert any("measured here" in p for p in catalog.plan_problems(host, []))
    assert math.isclose(catalog.load("rpi4").remote_timeout_s, 600.0) and catalog.load("rpi4").remote_python == "python3"
