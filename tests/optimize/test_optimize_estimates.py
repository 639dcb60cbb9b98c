"""Optimizing for a device that is neither this host nor connected: every model's latency is the estimator's, and
the speed-up over the peer default carries an interval from the held-out residuals both estimates state theirs from."""
from __future__ import annotations

import pytest

from conftest import compose_cfg
from model_files import onnx_classifier
from pipeline.optimize import choose, timing


@pytest.fixture(scope="module")
def pixel7():
    return compose_cfg(["recipe=optimize", "device=pixel7"]).device


def test_an_estimate_carries_the_residuals_of_its_interval(tmp_path, pixel7):
    e = timing.estimate(pixel7, "onnx", onnx_classifier(tmp_path / "m.onnx", size=32))
    assert "error" not in e, e
    lo, hi = e["interval_ms"]
    assert lo < e["latency_ms"] < hi and len(e["log_residuals"]) >= 9
    assert "not a measurement" in e["label"]


def test_the_speedup_of_two_estimates_has_an_interval_around_it(tmp_path, pixel7):
    small = timing.estimate(pixel7, "onnx", onnx_classifier(tmp_path / "small.onnx", size=16))
    large = timing.estimate(pixel7, "onnx", onnx_classifier(tmp_path / "large.onnx", size=64))
    peer = {"id": "unmodified/peer", "latency_ms": large["latency_ms"], "estimate": large}
    mine = {"id": "trial 0/x", "latency_ms": small["latency_ms"], "estimate": small}
    choose.speedups([peer, mine], peer, {"source": "estimate"})
    lo, hi = mine["speedup_vs_peer_interval"]
    assert mine["speedup_vs_peer"] == pytest.approx(large["latency_ms"] / small["latency_ms"])
    assert lo < mine["speedup_vs_peer"] < hi
    assert peer["speedup_vs_peer"] == 1.0 and peer["speedup_vs_peer_interval"] is None
    # the same set on both sides: the pair of one residual with itself is left out
    same = timing.ratio_interval(2.0, [-0.1, 0.0, 0.1])
    assert same == pytest.approx([2.0 * 2.718281828 ** -0.2, 2.0 * 2.718281828 ** 0.2], rel=1e-6)
    assert timing.ratio_interval(2.0, [0.0, 0.1]) is None  # too few to state one


def test_each_model_is_estimated_at_the_precision_it_computes_in(tmp_path, pixel7):
    path = onnx_classifier(tmp_path / "m.onnx", size=64)
    at = {p: timing.estimate(pixel7, "onnx", path, p) for p in ("int8", "fp32", "bf16")}
    assert "cpu, int8," in at["int8"]["label"] and "cpu, fp32," in at["fp32"]["label"]  # not both at int8
    assert "cpu, fp16," in at["bf16"]["label"] or "cpu, fp32," in at["bf16"]["label"]
    assert at["int8"]["latency_ms"] != at["fp32"]["latency_ms"]
