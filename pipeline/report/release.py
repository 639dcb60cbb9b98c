"""The release gate's judge: this run's deployable model against a registry version (the champion), one typed
`Release` with a `Check` per quantity, and the Markdown report a pull request shows. Pure functions (scipy imported
lazily for the binomial intervals); pipeline.tracking.gate gathers the numbers.

A change counts only beyond its noise:
- accuracy: the difference of the two validation accuracies with its 95% interval (Newcombe's hybrid score interval,
  built from each side's Wilson interval on its validation count); a regression when the whole interval is below
  zero. Both sides are usually scored on the same images, which a paired test would exploit; the two-sample interval
  is wider, so it errs toward "no measurable change", never toward a false alarm.
- latency: both files timed again, side by side in one fresh process on this host (pipeline.runtimes.measure), the
  ratio champion p50 / this p50 with its bootstrap interval; a regression when the whole interval says slower by more
  than the tolerance (gate.tolerance_pct).
- size and the device estimate have no sampling noise: a regression when larger by more than the tolerance.
Identical files (same sha256) are the same model: no change whatever the timing says.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from pipeline.report.schema import FAIL, NA, PASS, Check, Release

SAME, BETTER, WORSE = "no measurable change", "better", "worse"


@dataclass(frozen=True)
class Side:
    """One model the gate compares: its facts from its run's summary.json."""

    label: str  # "this run" | "champion v3"
    artifact: str
    format: str
    precision: str
    sha256: str | None
    size_bytes: int
    accuracy: float | None = None
    samples: int | None = None  # validation images the accuracy was measured on
    estimate_ms: float | None = None
    run_id: str | None = None


def wilson(p: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion p measured on n trials (scipy's binomtest)."""
    from scipy.stats import binomtest

    ci = binomtest(int(round(p * n)), n).proportion_ci(confidence, method="wilson")
    return float(ci.low), float(ci.high)


def difference(p1: float, n1: int, p2: float, n2: int) -> tuple[float, float, float]:
    """p1 - p2 with Newcombe's hybrid score interval (method 10 of Newcombe 1998), from the two Wilson intervals.
    Written out because neither scipy nor numpy has it; it is three lines on top of scipy's Wilson intervals."""
    l1, u1 = wilson(p1, n1)
    l2, u2 = wilson(p2, n2)
    d = p1 - p2
    return d, d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)


@dataclass(frozen=True)
class _Compared:
    check: Check | None
    change: str = SAME
    why_not: str | None = None  # why it could not be compared
    cells: tuple[str, str, str] = ("", "", "")  # this run, the other side, the comparison (for the report's table)


def _accuracy(new: Side, old: Side, metric: str, identical: bool) -> _Compared:
    if new.accuracy is None or old.accuracy is None:
        who = "this run's model" if new.accuracy is None else f"the {old.label}"
        return _Compared(None, why_not=f"{metric}: {who} has no {metric} to compare")
    if not (new.samples and old.samples):
        return _Compared(None, why_not=f"{metric}: the validation count is not recorded, so its interval is unknown")
    d, lo, hi = difference(new.accuracy, new.samples, old.accuracy, old.samples)
    change = SAME if identical else WORSE if hi < 0 else BETTER if lo > 0 else SAME
    compared = f"{100 * d:+.2f} points (95% interval {100 * lo:+.2f} to {100 * hi:+.2f})"
    text = f"{metric} {100 * new.accuracy:.2f}% vs {100 * old.accuracy:.2f}%: {compared}"
    check = Check("accuracy", change != WORSE, text, round(100 * d, 4), 0.0, "points",
                  f"Newcombe interval from Wilson intervals on {new.samples} and {old.samples} validation images")
    return _Compared(check, change, None, (f"{100 * new.accuracy:.2f}% ({new.samples} images)",
                                           f"{100 * old.accuracy:.2f}% ({old.samples} images)", compared))


def _latency(timing: dict | None, tol: float, identical: bool) -> _Compared:
    if not timing or timing.get("speedup") is None:
        return _Compared(None, why_not="latency: " + ((timing or {}).get("why") or "not timed"))
    s, (lo, hi) = timing["speedup"], timing["ci"]
    change = SAME if identical else WORSE if hi < 1 / (1 + tol) else BETTER if lo > 1 else SAME
    words = f"{s:.2f}x faster" if s >= 1 else f"{1 / s:.2f}x slower"
    compared = f"{words} (speed-up interval {lo:.2f}-{hi:.2f}x)"
    text = f"latency p50 {timing['new_p50']:.3g} ms vs {timing['old_p50']:.3g} ms: {compared}"
    check = Check("latency", change != WORSE, text, round(s, 4), round(1 / (1 + tol), 4), "x",
                  timing.get("measured_on", ""))
    ci = lambda c: f" ({c[0]:.3g}-{c[1]:.3g})" if c and None not in c else ""
    return _Compared(check, change, None, (f"{timing['new_p50']:.3g} ms{ci(timing.get('new_ci'))}",
                                           f"{timing['old_p50']:.3g} ms{ci(timing.get('old_ci'))}", compared))


def _growth(name: str, new: float | None, old: float | None, tol: float, unit: str, source: str,
            identical: bool) -> _Compared:
    if new is None and old is None:
        return _Compared(None, why_not=f"{name}: neither model has one")
    if new is None or old is None:
        return _Compared(None, why_not=f"{name}: only {'the other side' if new is None else 'this run'} has one")
    ratio = new / old if old else 1.0
    change = SAME if identical else WORSE if ratio > 1 + tol else BETTER if ratio < 1 / (1 + tol) else SAME
    text = f"{name} {new:.3g} {unit} vs {old:.3g} {unit}: {ratio:.2f}x"
    check = Check(name, change != WORSE, text, round(ratio, 4), round(1 + tol, 4), "x", source)
    return _Compared(check, change, None, (f"{new:.3g} {unit}", f"{old:.3g} {unit}", f"{ratio:.2f}x"))


def compare(new: Side, old: Side, timing: dict | None, tolerance_pct: float, metric: str,
            device: str) -> list[_Compared]:
    """Each quantity compared (accuracy, latency, size, device estimate), in the report's order."""
    tol = tolerance_pct / 100.0
    identical = bool(new.sha256) and new.sha256 == old.sha256
    return [_accuracy(new, old, metric, identical), _latency(timing, tol, identical),
            _growth("size", new.size_bytes / 1e6, old.size_bytes / 1e6, tol, "MB", "file size", identical),
            _growth("device estimate", new.estimate_ms, old.estimate_ms, tol, "ms",
                    f"latency estimate for {device} (not a measurement)", identical)]


def judge(new: Side, old: Side | None, against: str, timing: dict | None, tolerance_pct: float = 5.0,
          metric: str = "top-1", device: str = "the device") -> Release:
    """The release verdict: fail only on a regression beyond the noise (and the tolerance); pass otherwise; n/a when
    there is nothing to compare with (no champion yet)."""
    if old is None:
        return Release(against=against, status=NA, headline=f"nothing to compare with: no {against}",
                       not_checked=[f"no {against}"])
    results = compare(new, old, timing, tolerance_pct, metric, device)
    identical = bool(new.sha256) and new.sha256 == old.sha256
    worse = [r.check.message for r in results if r.check and r.change == WORSE]
    better = [r.check.message for r in results if r.check and r.change == BETTER]
    if worse:
        status, headline = FAIL, "regression: " + "; ".join(_short(m) for m in worse)
    elif better:
        status, headline = PASS, "improved: " + "; ".join(_short(m) for m in better)
    else:
        status, headline = PASS, SAME + (" (identical file)" if identical else "")
    return Release(against=against, status=status, headline=headline, checks=[r.check for r in results if r.check],
                   regressions=worse, improvements=better, not_checked=[r.why_not for r in results if r.why_not])


def _short(message: str) -> str:
    """'latency p50 0.52 ms vs 0.31 ms: 1.68x slower (...)' -> 'latency p50 0.52 ms vs 0.31 ms: 1.68x slower'."""
    return message.split(" (")[0]


def markdown(r: Release, new: Side, old: Side | None, title: str, timing: dict | None = None,
             tolerance_pct: float = 5.0, metric: str = "top-1", device: str = "the device",
             notes: list[str] = ()) -> str:
    """The report for a pull-request comment: the verdict and its one phrase first, then one row per quantity."""
    mark = {PASS: "✅ pass", FAIL: "❌ fail", NA: "➖ n/a"}[r.status]
    lines = [f"## Release gate: {mark}: {r.headline}", "", title, ""]
    if old is not None:
        lines += [f"| | this run: {new.artifact} ({new.format} {new.precision}) | {old.label}: {old.artifact} "
                  f"({old.format} {old.precision}) | change | verdict |", "|---|---|---|---|---|"]
        for c in compare(new, old, timing, tolerance_pct, metric, device):
            if c.check is not None:
                word = {WORSE: "**regression**", BETTER: "better", SAME: SAME}[c.change]
                lines.append(f"| {c.check.name} | " + " | ".join(c.cells) + f" | {word} |")
        lines.append("")
    lines += [f"- not compared: {n}" for n in r.not_checked]
    lines += [f"- {n}" for n in notes]
    return "\n".join(lines).rstrip() + "\n"
