"""Every verdict the user sees, decided here and nowhere else: which artifact a run is judged on, each model's
baseline and ratios, and one `Verdict` per model from these rules:

- accuracy_drop: points of the task metric lost against the baseline, within gate.max_accuracy_drop;
- speed: not measurably slower than its baseline (the interval of the side-by-side ratio decides), and a measured
  choice not slower than the fastest fp32 model it was timed with;
- parity: the parity stage's thresholds held against the model it was made from;
- device budgets: latency / FPS / size / RAM (pipeline.devices.budgets does the arithmetic);
- metric: a task metric that cannot be computed here makes the status n/a (never a pass), unless a check failed.

The console, summary.json, MLflow, the registry, compare and the release gate read these verdicts; none re-judges.
Imports no ML framework.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from pipeline.report.schema import FAIL, NA, PASS, ArtifactRow, Check, Gate, Verdict


def judged(rows: list[ArtifactRow], name: str | None = None) -> ArtifactRow | None:
    """The row a run is judged on (`gate.artifact`): the named one, else the last model the plan produced (rows are
    in plan order: the end of the chain, the deployment artifact)."""
    if name:
        return next((r for r in rows if r.name == name), None)
    return rows[-1] if rows else None


def _baseline(r: ArtifactRow, rows: list[ArtifactRow]) -> ArtifactRow | None:
    """What a model is compared with: itself if fp32; else the fp32 model of its format; Core ML's float package is
    fp16, so an int8 package is compared with that; else the fastest timed fp32 model; else any fp32 model."""
    if r.precision == "fp32":
        return r
    others = [b for b in rows if b is not r]
    same = [b for b in others if b.format == r.format and b.precision == "fp32"]
    if same:
        return same[0]
    fp16 = [b for b in others if b.format == r.format and b.precision == "fp16"]
    if fp16 and r.precision != "fp16":
        return fp16[0]
    fp32 = [b for b in rows if b.precision == "fp32"]
    timed = sorted((b for b in fp32 if b.latency_ms), key=lambda b: b.latency_ms["p50"])
    if timed and r.latency_ms:
        return timed[0]
    return fp32[0] if fp32 else None


def _speed(r: ArtifactRow, base: ArtifactRow) -> tuple[float | None, list | None, str | None]:
    """(speed-up, its interval, verdict): the interval of the ratio measured side by side decides when there is one,
    else the p50 intervals; a latency timed without intervals is judged by its ratio."""
    if not (r.latency_ms and base.latency_ms):
        return None, None, None
    from pipeline.library import stats  # (numpy, imported only when there is a latency to judge)

    speedup = base.latency_ms["p50"] / r.latency_ms["p50"]
    ci = (r.ratio_ci or {}).get(base.name)
    if ci:
        return speedup, list(ci), stats.verdict_from_ratio(*ci[:2])
    a, b = r.latency_ms.get("p50_ci"), base.latency_ms.get("p50_ci")
    if a and b:
        return speedup, None, stats.compare({"ci": a}, {"ci": b})
    return speedup, None, stats.FASTER if speedup >= 1.0 else stats.SLOWER


def _quality_checks(r: ArtifactRow, base: ArtifactRow | None, speed: tuple, max_drop: float,
                    metric: str) -> tuple[list[Check], float | None]:
    checks: list[Check] = []
    delta = None
    speedup, ci, verdict = speed
    if base is not None and base is not r:
        if verdict is not None:
            shown = f"{speedup:.2f}x" + (f", interval {ci[0]:.2f}-{ci[1]:.2f}x" if ci else "")
            ok = verdict != "slower"
            checks.append(Check("speed", ok, (f"slower than its fp32 baseline {base.name!r} ({shown})" if not ok
                                              else f"{verdict} than {base.name!r} ({shown})"),
                                round(speedup, 4), 1.0, "x", "measured side by side on this host"))
        if r.accuracy is not None and base.accuracy is not None:
            delta = 100.0 * (r.accuracy - base.accuracy)
            ok = -delta <= max_drop
            checks.append(Check("accuracy_drop", ok,
                                (f"loses {-delta:.2f} {metric} points against {base.name!r} (gate.max_accuracy_drop="
                                 f"{max_drop:g})" if not ok else f"{delta:+.2f} {metric} points against {base.name!r}"),
                                round(-delta, 4), max_drop, f"{metric} points", f"accuracy against {base.name}"))
    sel = r.selection or {}
    if sel.get("slower_than_fp32"):
        checks.append(Check("speed", False, f"slower than the fastest fp32 model {sel['fastest_fp32']!r} timed in the "
                                            f"same run ({sel['speedup_vs_fastest_fp32']:.2f}x)",
                            sel["speedup_vs_fastest_fp32"], 1.0, "x", "measured side by side on this host"))
    parity = r.parity or {}
    if parity.get("ok") is False:
        why = "; ".join(parity.get("problems") or []) or "below its thresholds"
        checks.append(Check("parity", False, f"parity against {parity.get('source')!r}: {why}",
                            source=f"parity against {parity.get('source')}"))
    elif parity.get("ok") is True:
        checks.append(Check("parity", True, f"agrees with {parity.get('source')!r}",
                            source=f"parity against {parity.get('source')}"))
    return checks, delta


def _budget_checks(r: ArtifactRow, limits: dict, device: Any, gate_cfg: Any) -> tuple[list[Check], list[str]]:
    from pipeline.devices import budgets, catalog

    v = budgets.verdict(_budget_view(r), limits, device.name, catalog.measured_here(device),
                        judge=_get(gate_cfg, "judge", "point"))
    checks = [Check(c["budget"], c["ok"], (f"{c['budget']} {c['value']:g} {c['unit']} vs limit {c['limit']:g}"
                                           + (f": {c['by']}" if not c["ok"] else "")),
                    c["value"], c["limit"], c["unit"], c["source"]) for c in v["checks"]]
    return checks, v["not_checked"]


def _budget_view(r: ArtifactRow) -> dict:
    """The fields pipeline.devices.budgets reads (it works on plain data, unit-testable by hand)."""
    return {"name": r.name, "size_bytes": r.size_bytes, "latency_ms": r.latency_ms, "estimate": r.estimate,
            "device_latency_ms": r.device_latency_ms, "measured_on_device": r.measured_on_device,
            "measured_on": r.measured_on, "ram_estimate_mb": r.ram_estimate_mb, "load_rss_mb": r.load_rss_mb}


def _get(obj: Any, key: str, default=None):
    if obj is None:
        return default
    return obj.get(key, default) if hasattr(obj, "get") else getattr(obj, key, default)


def verdict(r: ArtifactRow, rows: list[ArtifactRow], gate_cfg: Any, device: Any, metric: str = "top-1",
            limits: dict | None = None) -> Verdict:
    """One model's verdict from every rule above."""
    from pipeline.devices import budgets

    limits = budgets.effective(device, gate_cfg) if limits is None else limits
    base = _baseline(r, rows)
    speed = _speed(r, base) if base is not None and base is not r else (None, None, None)
    quality, delta = _quality_checks(r, base, speed, float(limits["max_accuracy_drop"]), metric)
    device_checks, not_checked = _budget_checks(r, limits, device, gate_cfg)
    checks = quality + device_checks
    problems = [c.message for c in checks if not c.ok]
    if problems:
        status = FAIL
    elif r.accuracy is None and r.accuracy_na:
        status, problems = NA, [f"{metric} n/a: {r.accuracy_na}"]
    else:
        status = PASS
    return Verdict(status=status, problems=problems, checks=checks, not_checked=not_checked,
                   baseline=base.name if base else None, speedup=speed[0], speedup_ci=speed[1],
                   speed_verdict=speed[2],
                   size_ratio=(r.size_bytes / base.size_bytes if base is not None and base is not r
                               and base.size_bytes else None),
                   accuracy_delta=delta)


def judge(rows: list[ArtifactRow], gate_cfg: Any, device: Any, metric: str = "top-1") -> tuple[list[ArtifactRow], Gate]:
    """Every row with its verdict, and the run's gate: the judged artifact's verdict."""
    from pipeline.devices import budgets

    limits = budgets.effective(device, gate_cfg)
    out = [replace(r, verdict=verdict(r, rows, gate_cfg, device, metric, limits)) for r in rows]
    row = judged(out, _get(gate_cfg, "artifact"))
    gate = Gate(artifact=row.name if row else None, status=row.verdict.status if row else NA,
                failed=list(row.verdict.problems) if row else ["the run produced no model"], budgets=limits,
                enforce=bool(_get(gate_cfg, "enforce", False)))
    return out, gate
