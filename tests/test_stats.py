"""Timing intervals and verdicts (pipeline.library.stats), and the measuring process's interval keys on real models."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from pipeline.library import stats
from pipeline.runtimes import measure


def test_one_trial_matches_scipy_percentile_bootstrap():
    scipy_stats = pytest.importorskip("scipy.stats")
    x = np.random.default_rng(1).lognormal(0.0, 0.2, 200)
    lo, hi = stats.p50_interval(x.tolist(), resamples=4000)
    ref = scipy_stats.bootstrap((x,), np.median, confidence_level=0.95, n_resamples=4000, method="percentile",
                                random_state=np.random.default_rng(2)).confidence_interval
    assert lo < np.median(x) < hi
    assert abs(lo - ref.low) < 0.02 and abs(hi - ref.high) < 0.02


def test_trials_that_disagree_widen_the_interval():
    rng = np.random.default_rng(0)
    # five trials at different machine loads: the spread between them belongs in the interval
    trials = [(1.0 + 0.3 * k + 0.01 * rng.standard_normal(20)).tolist() for k in range(5)]
    flat = [v for t in trials for v in t]
    lo_t, hi_t = stats.p50_interval(trials)
    lo_f, hi_f = stats.p50_interval(flat)
    assert hi_t - lo_t > 1.5 * (hi_f - lo_f)


def test_same_model_twice_is_no_measurable_difference_and_a_real_gap_is_found():
    rng = np.random.default_rng(3)
    load = rng.lognormal(0.0, 0.3, (5, 20))  # shared by models timed side by side
    a = (1.0 * load * rng.lognormal(0, 0.05, (5, 20))).tolist()
    b = (1.0 * load * rng.lognormal(0, 0.05, (5, 20))).tolist()
    c = (1.5 * load * rng.lognormal(0, 0.05, (5, 20))).tolist()
    ra = stats.summarize(a)
    rb = stats.summarize(b)
    assert stats.compare(ra, rb) == stats.TIE and stats.overlaps(ra, rb)
    r, lo, hi = stats.ratio_interval(a, b)
    assert lo < 1.0 < hi and stats.compare(ra, rb, (lo, hi)) == stats.TIE
    r, lo, hi = stats.ratio_interval(a, c)  # c's p50 over a's: a is ~1.5x faster
    assert 1.3 < lo <= r <= hi < 1.7
    assert stats.compare(ra, stats.summarize(c), (lo, hi)) == stats.FASTER
    assert stats.compare(stats.summarize(c), ra, stats.ratio_interval(c, a)[1:]) == stats.SLOWER


def test_no_interval_is_no_verdict():
    assert stats.compare({"latency_p50_ms": 1.0}, {"latency_p50_ms": 2.0}) == stats.TIE
    assert stats.compare({"ci": [1.0, 1.1]}, {"ci": [1.3, 1.4]}) == stats.FASTER


@pytest.mark.bad_input
def test_bad_samples_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="no timing samples"):
        stats.p50_interval([])
    with pytest.raises(ValueError, match="round-robin"):
        stats.ratio_interval([[1.0, 2.0]], [[1.0]])


def test_round_robin_splits_trials_and_rotates_order():
    calls = []
    times = measure.time_round_robin({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 7, 3)
    assert [len(t) for t in times["a"]] == [3, 2, 2] and [len(t) for t in times["b"]] == [3, 2, 2]
    assert calls[:2] == ["a", "b"] and calls[6:8] == ["b", "a"]  # the second trial starts with b


def test_measure_process_reports_intervals_speedups_and_load(tmp_path):
    """Two real torch models in the measuring process: the keys the stages read, an interval around each p50."""
    torch = pytest.importorskip("torch")
    from pipeline import models

    torch.manual_seed(0)
    specs = []
    for name, width in (("small", 0.25), ("same", 0.25)):
        spec = {"name": "mobilenet_v2", "num_classes": 10, "kwargs": {"width_mult": width}}
        m = models.build_from_spec(spec)
        path = models.save_torch(m, tmp_path / name, spec)
        specs.append({"name": name, "fmt": "torch", "path": str(path), "meta": {}, "shape": [1, 3, 32, 32]})
    args = {"models": specs, "threads": 1, "warmup": 2, "iterations": 20, "trials": 4}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "pipeline.runtimes.measure", json.dumps(args)], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    for name in ("small", "same"):
        m = r["models"][name]
        assert {"latency_p50_ms", "latency_p90_ms", "latency_mean_ms", "load_ms", "load_rss_mb", "runtime"} <= set(m)
        assert m["latency_p50_ci_low_ms"] <= m["latency_p50_ms"] <= m["latency_p50_ci_high_ms"]
        assert m["trials"] == 4 and m["samples"] == 20
    s = r["speedups"]["small"]["same"]
    assert s["ci"][0] <= s["speedup"] <= s["ci"][1] and s["verdict"] in (stats.FASTER, stats.SLOWER, stats.TIE)
    assert "1min" in r["load_average"]["before"] and r["load_average"]["before"]["cpus"] >= 1
    assert "load average" in measure.describe_load(r["load_average"])
