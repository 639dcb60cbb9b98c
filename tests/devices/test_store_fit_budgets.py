"""The measurement store (a real SQLite file), the refit from it, the gate's judge, and plan-time checks of the new
device fields."""
from __future__ import annotations

import math
import sqlite3

import numpy as np
import pytest
from omegaconf import OmegaConf

from pipeline.devices import budgets, catalog, fit, model, store
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


def _result(p50, name="m", cpu="Raspberry Pi 4 Model B Rev 1.4", cores=4, version="1.31.1"):
    on = {"device": "Raspberry Pi 4", "connection": "ssh://pi@rpi:22", "runtime": "onnxruntime CPUExecutionProvider",
          "version": version, "threads": 4}
    return {"models": {name: {"latency_p50_ms": p50, "latency_p90_ms": p50 * 1.1, "latency_mean_ms": p50,
                             "load_ms": 5.0, "runtime": on["runtime"], "version": version, "samples": 30,
                             "measured_on": on}},
            "threads": 4, "cpu": cpu, "cores": cores, "machine": "aarch64", "peak_rss_mb": 50.0}


def _record(db, tmp_path, i, ch, size, p50, **kw):
    path = conv_onnx(tmp_path / f"m{i}.onnx", ch, size)
    return store.record_measurement(db, {"name": "rpi4"}, _result(p50, f"m{i}", **kw),
                                    [{"name": f"m{i}", "fmt": "onnx", "path": str(path), "precision": "fp32"}])


def test_store_round_trip_and_refit_from_it(tmp_path):
    db = tmp_path / "outputs" / store.FILENAME
    for i, (ch, size) in enumerate([(16, 32), (32, 32), (64, 32), (32, 64), (64, 64), (8, 64)]):
        macs = ch * 27 * size * size
        # a board at 20% of its 96 G op/s peak plus 0.3 ms per inference
        assert _record(db, tmp_path, i, ch, size, 2 * macs / (96e9 * 0.2) * 1e3 + 0.3) == 1
    rows = store.rows(db)
    assert len(rows) == 6 and {r["device"] for r in rows} == {"rpi4"}
    r = rows[0]
    assert (r["runtime"], r["runtime_version"], r["precision"], r["threads"], r["cores"], r["cpu"]) == (
        "onnxruntime CPUExecutionProvider", "1.31.1", "fp32", 4, 4, "Raspberry Pi 4 Model B Rev 1.4")
    prof = store.profile(db, r["fingerprint"])
    assert prof.totals()["macs"] == profile_onnx(tmp_path / "m0.onnx").totals()["macs"]
    samples, refused = fit.store_samples(db)
    assert refused == [] and len(samples) == 6
    assert {(s.kind, s.device, s.runtime, s.precision) for s in samples} == {("cpu", "rpi4", "onnxruntime", "fp32")}
    assert all(s.runtime_version == "onnxruntime CPUExecutionProvider 1.31.1" and "[M] measured" in s.source
               for s in samples)
    kf = fit.fit_kind(samples)
    errs = [abs(model.predict(kf, list(s.x), "fp32", kf["devices"]["rpi4"]["fp32"], 0.0) / s.latency_ms - 1)
            for s in samples]
    assert max(errs) < 0.05  # the fit finds the board's cost shape from its own measurements


@pytest.mark.bad_input
def test_the_refit_refuses_a_measurement_from_a_cpu_that_is_not_the_devices(tmp_path, capsys):
    db = tmp_path / store.FILENAME
    _record(db, tmp_path, 0, 16, 32, 1.0)  # the board itself: trusted
    _record(db, tmp_path, 1, 16, 32, 0.2, cpu="Intel(R) Xeon(R) Processor", cores=2)  # this host, stored as rpi4
    _record(db, tmp_path, 2, 16, 32, 0.2, version="")  # no runtime version
    samples, refused = fit.store_samples(db)
    assert len(samples) == 1
    assert any("measured on CPU 'Intel(R) Xeon(R) Processor', but conf/device/rpi4.yaml expects one of "
               "['Raspberry Pi 4', 'BCM2711', 'Cortex-A72']: it was measured on another machine" in r for r in refused)
    assert any("reported 2 CPU cores, conf/device/rpi4.yaml says 4" in r for r in refused)
    assert any("no version of onnxruntime CPUExecutionProvider recorded" in r for r in refused)
    before = fit.CALIBRATION.read_bytes()
    assert fit.main(["--store", str(db)]) == 2  # refused before any fitting: nothing written
    assert fit.CALIBRATION.read_bytes() == before
    out = capsys.readouterr().out
    assert "refit refused" in out and "nothing was written" in out and "Benchmark again with device=rpi4" in out


def test_runtime_versions_keep_the_2019_kernels_apart_from_xnnpack():
    assert store.model_runtime("LiteRT Interpreter", "2.1.0") == "tflite-2019"
    assert store.model_runtime("tflite-runtime", "2.14.0") == "xnnpack"
    assert store.model_runtime("LiteRT benchmark_model", "unknown") is None  # cannot tell: refused by the refit
    assert store.model_runtime("onnxruntime CPUExecutionProvider", "1.31.1") == "onnxruntime"


def test_a_failed_record_writes_nothing(tmp_path):
    db = tmp_path / store.FILENAME
    good = {"device": "rpi4", "runtime": "x", "fingerprint": "f1", "latency_p50_ms": 1.0}
    with pytest.raises(ValueError, match="without fingerprint"):
        store.record(db, [good, {"device": "rpi4", "runtime": "x"}])
    assert store.rows(db) == []  # one transaction: the good row went too
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT count(*) FROM measurements").fetchone()[0] == 0


MEM = {"peak_mb": 30.0, "interval_mb": [12.0, 80.0], "label": "80% interval 12-80 MB peak inference memory, estimate"}
ROW = {"name": "quantize", "size_bytes": 1e6, "latency_ms": None,
       "estimate": {"latency_ms": 40.0, "upper_ms": 55.0, "label": "80% interval 30-55 ms, estimate for Raspberry Pi 4",
                    "memory": MEM}}


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


def test_gate_judges_ram_on_the_peak_memory_estimate():
    limits = {"latency_ms": None, "fps": None, "model_mb": None, "ram_mb": 50.0, "max_accuracy_drop": 1.0}
    point = budgets.verdict(ROW, limits, "rpi4")
    assert point["pass"] and point["checks"][0]["value"] == 30.0 and "peak inference memory" in point["checks"][0]["source"]
    up = budgets.verdict(ROW, limits, "rpi4", judge="upper")  # the whole interval must fit: 80 MB does not
    assert up["failed"] == ["ram_mb 80 MB vs limit 50: over by 30 MB (60%)"]
    none = budgets.verdict({**ROW, "estimate": None}, limits, "rpi4")
    assert none["pass"] and none["not_checked"] == ["ram_mb (no peak-memory estimate (profile stage))"]
    host = budgets.verdict({**ROW, "estimate": None, "load_rss_mb": 70.0, "measured_on": "this host"}, limits, "host",
                           measured_here=True)
    assert host["failed"][0].startswith("ram_mb 70 MB") and "measured" in host["checks"][0]["source"]


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
