"""The release gate's judge, table-driven on hand-made sides: what counts as a regression, what is noise."""
from __future__ import annotations

import pytest

from pipeline.report import release
from pipeline.report.release import Side


def side(acc=0.9, n=400, size=1_000_000, sha="a", est=None, label="this run"):
    return Side(label, "quantize", "onnx", "int8", sha, size, acc, n, est)


def timing(speedup, lo, hi):
    return {"speedup": speedup, "ci": [lo, hi], "new_p50": 1.0, "old_p50": speedup, "measured_on": "here"}


def test_wilson_and_newcombe_match_published_values():
    # Newcombe (1998), table II, example (a): 56/70 - 48/80 = 0.2000, method 10 interval 0.0524 to 0.3339
    d, lo, hi = release.difference(56 / 70, 70, 48 / 80, 80)
    assert d == pytest.approx(0.2) and lo == pytest.approx(0.0524, abs=5e-4) and hi == pytest.approx(0.3339, abs=5e-4)


@pytest.mark.parametrize("new_acc, status, word", [
    (0.90, "pass", "no measurable change"),  # the same number
    (0.88, "pass", "no measurable change"),  # 2 points on 400 images: within the sampling noise
    (0.80, "fail", "regression"),  # 10 points: beyond it
    (0.97, "pass", "improved"),
])
def test_accuracy_counts_only_beyond_its_interval(new_acc, status, word):
    r = release.judge(side(new_acc, sha="b"), side(0.90, label="champion v1"), "champion v1", timing(1.0, 0.95, 1.05))
    assert r.status == status and r.headline.startswith(word)


@pytest.mark.parametrize("ci, status", [((0.97, 1.03), "pass"), ((0.96, 0.99), "pass"),  # within the 5% tolerance
                                        ((0.70, 0.80), "fail"), ((1.2, 1.4), "pass")])
def test_latency_counts_only_beyond_interval_and_tolerance(ci, status):
    r = release.judge(side(sha="b"), side(label="champion v1"), "champion v1", timing(sum(ci) / 2, *ci))
    assert r.status == status
    if status == "fail":
        assert r.regressions[0].startswith("latency") and "slower" in r.headline


def test_size_and_estimate_have_no_noise_but_a_tolerance():
    r = release.judge(side(size=1_200_000, est=2.0, sha="b"), side(est=2.05, label="c"), "c", timing(1, 0.98, 1.02))
    assert r.status == "fail" and [c.split()[0] for c in r.regressions] == ["size"]
    r = release.judge(side(est=3.0, sha="b"), side(est=2.0, label="c"), "c", timing(1, 0.98, 1.02))
    assert r.status == "fail" and r.regressions[0].startswith("device estimate")


def test_identical_files_are_no_change_whatever_the_timing_says():
    r = release.judge(side(), side(label="champion v1"), "champion v1", timing(0.8, 0.7, 0.9))
    assert r.status == "pass" and r.headline == "no measurable change (identical file)"


def test_nothing_to_compare_with_is_na_not_pass_and_not_fail():
    r = release.judge(side(), None, "champion of demo-host", None)
    assert r.status == "n/a" and r.passed and "nothing to compare with" in r.headline


def test_missing_numbers_are_named_not_guessed():
    r = release.judge(side(acc=None, sha="b"), side(label="c"), "c", None)
    assert r.status == "pass" and not r.checks[0].name == "accuracy"
    assert any("has no top-1" in n for n in r.not_checked) and any(n.startswith("latency") for n in r.not_checked)


def test_the_report_names_the_regression_with_its_interval():
    new, old = side(0.80, sha="b"), side(0.90, label="champion v3")
    t = timing(1.0, 0.95, 1.05)
    r = release.judge(new, old, "champion v3", t)
    md = release.markdown(r, new, old, "title", t)
    assert md.startswith("## Release gate: ❌ fail: regression: top-1 80.00% vs 90.00%: -10.00 points")
    row = next(l for l in md.splitlines() if l.startswith("| accuracy"))
    assert "(400 images)" in row and "95% interval" in row and row.endswith("| **regression** |")
